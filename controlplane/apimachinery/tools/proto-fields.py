#!/usr/bin/env python3
"""Derives data/proto-fields.txt: the protobuf field numbers of the built-in kinds (upstream's generated.proto),
read from the k8s-pb crate's prost-generated Rust sources, with each field's JSON name taken from our OpenAPI
definitions. Run once per Kubernetes version:

    tools/proto-fields.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src target/*/debug/build/basalt-apimachinery-*/out/openapi.json.z
"""
import json, os, re, sys, zlib

src, openapi = sys.argv[1], sys.argv[2]
defs = json.loads(zlib.decompress(open(openapi, 'rb').read()))['definitions']

PREFIX = {
    'api': 'io.k8s.api',
    'apimachinery': 'io.k8s.apimachinery',
    'apiextensions_apiserver': 'io.k8s.apiextensions-apiserver',
    'kube_aggregator': 'io.k8s.kube-aggregator',
}

def module_of(path):
    rel = os.path.relpath(os.path.dirname(path), src).split(os.sep)
    return rel if rel[0] in PREFIX else None

# prost renames messages (HTTPGetAction → HttpGetAction): match definitions ignoring case.
BY_NORM = {d.lower(): d for d in defs}

def definition(parts):
    full = '.'.join([PREFIX[parts[0]]] + parts[1:])
    return BY_NORM.get(full.lower(), full)

def resolve(mod, rust_type):
    # `super::super::x::Y` relative to mod (crate-relative module parts), or a bare `Y` in mod.
    t = rust_type.split('<')[-1].rstrip('>').strip()
    parts = t.split('::')
    cur = list(mod)
    while parts and parts[0] == 'super':
        cur.pop(); parts.pop(0)
    return definition(cur + parts)

# Types the decoder reads by hand (their JSON form is not an object of their proto fields).
SPECIAL = {
    'io.k8s.apimachinery.pkg.util.intstr.IntOrString', 'io.k8s.apimachinery.pkg.runtime.RawExtension',
    'io.k8s.apimachinery.pkg.api.resource.Quantity', 'io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1',
    'io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime', 'io.k8s.apimachinery.pkg.apis.meta.v1.Time',
}

def norm(s):
    return s.replace('_', '').replace('-', '').replace('$', '').lower()

structs = {}
for dirpath, _, files in os.walk(src):
    for f in files:
        if f != 'mod.rs':
            continue
        path = os.path.join(dirpath, f)
        mod = module_of(path)
        if mod is None:
            continue
        text = open(path).read()
        for m in re.finditer(r'pub struct (\w+) \{\n(.*?)\n\}', text, re.S):
            structs[definition(mod + [m.group(1)])] = (mod, m.group(2))

def unwrap_generics(text):
    # Joins the lines of a type rustfmt spread over several (`BTreeMap<\n  K,\n  V,\n>`).
    out, depth, i = [], 0, 0
    while i < len(text):
        c = text[i]
        if c == '<':
            depth += 1
        elif c == '>':
            depth -= 1
        if c == '\n' and depth > 0:
            while i + 1 < len(text) and text[i + 1] in ' \t':
                i += 1
            i += 1
            continue
        out.append(c)
        i += 1
    return ''.join(out).replace(',>', '>')

out = []
# (message, JSON properties to name its fields by): the served definitions, then messages embedded inline
# whose fields take the names of their parent's properties.
todo = [(d, defs[d].get('properties', {})) for d in sorted(structs) if d in defs and d not in SPECIAL]
done = set()
while todo:
    full, props = todo.pop(0)
    if full in done:
        continue
    done.add(full)
    mod, body = structs[full]
    body = re.sub(r'^\s*//.*\n', '', body, flags=re.M)  # doc comments (their `<` and `:` confuse the rest)
    body = re.sub(r':\n\s+', ': ', body)  # a type rustfmt wrapped onto its own line
    body = unwrap_generics(body)
    for fm in re.finditer(r'#\[prost\(([^)]*)\)\]\s*pub (r#)?(\w+): ([^\n]+),\n', body + '\n'):
        attr, fname, ftype = fm.group(1), fm.group(3), fm.group(4)
        tag = re.search(r'tag = "(\d+)"', attr).group(1)
        json_name = next((p for p in props if norm(p) == norm(fname)), None)
        if json_name is None:
            # A Go struct embedded inline: its fields are the parent's in JSON.
            kind = attr.split(',')[0].strip()
            inner = resolve(mod, ftype) if kind == 'message' else None
            if inner in structs:
                out.append(f'{full} {tag} - inline msg:{inner}')
                todo.append((inner, props))
            else:
                print(f'no JSON name for {full}.{fname}', file=sys.stderr)
            continue
        mm = re.match(r'btree_map = "(\w+), (\w+)"', attr)
        if mm:
            key, val = mm.group(1), mm.group(2)
            if val == 'message':
                val = 'msg:' + resolve(mod, ftype.split(',')[-1].strip().rstrip('>'))
            out.append(f'{full} {tag} {json_name} map {key},{val}')
            continue
        kind = attr.split(',')[0].split('=')[0].strip()
        label = 'rep' if 'repeated' in attr else 'opt'
        if kind == 'message':
            kind = 'msg:' + resolve(mod, ftype)
        out.append(f'{full} {tag} {json_name} {label} {kind}')

header = '''# Protobuf field numbers of the built-in kinds (upstream's generated.proto): clients such as kubectl send
# typed objects as application/vnd.kubernetes.protobuf. Derived by tools/proto-fields.py from the k8s-pb
# crate's generated sources, the JSON names from our OpenAPI definitions.
#
# <definition> <tag> <json name> opt|rep <kind>        kind: string bytes bool int32 int64 double msg:<definition>
# <definition> <tag> <json name> map <key>,<value>
'''
sys.stdout.write(header + '\n'.join(sorted(out, key=lambda l: (l.split()[0], int(l.split()[1])))) + '\n')
