//! Just enough of ELF64 (little-endian) to learn what a dynamically linked program needs at run time: its
//! interpreter (`PT_INTERP`) and the libraries it names (`DT_NEEDED`), and to resolve those the way the
//! dynamic loader does for the default search path.
//!
//! Written here instead of taking `object`/`goblin`: two program-header lookups are all we read, and `ldd`
//! must not be used (it executes the binary).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{0}: not a 64-bit little-endian ELF file")]
    NotElf64(PathBuf),
    #[error("{0}: truncated or malformed ELF ({1})")]
    Malformed(PathBuf, &'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} needs {library}, which is in none of {searched:?}")]
    MissingLibrary {
        binary: PathBuf,
        library: String,
        searched: &'static [&'static str],
    },
}

/// What the dynamic loader needs to run one ELF file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// The default search path of glibc's loader on Debian amd64.
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

pub fn parse(path: &Path, data: &[u8]) -> Result<Dynamic, ElfError> {
    let bad = |why| ElfError::Malformed(path.to_owned(), why);
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(ElfError::NotElf64(path.to_owned()));
    }
    let u16_at = |o: usize| -> Result<u64, ElfError> {
        Ok(u16::from_le_bytes(data.get(o..o + 2).ok_or(bad("header"))?.try_into().unwrap()) as u64)
    };
    let u32_at = |o: usize| -> Result<u64, ElfError> {
        Ok(u32::from_le_bytes(data.get(o..o + 4).ok_or(bad("header"))?.try_into().unwrap()) as u64)
    };
    let u64_at = |o: usize| -> Result<u64, ElfError> {
        Ok(u64::from_le_bytes(
            data.get(o..o + 8).ok_or(bad("header"))?.try_into().unwrap(),
        ))
    };
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    // (type, offset, vaddr, filesz)
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        phdrs.push((
            u32_at(o)? as u32,
            u64_at(o + 8)?,
            u64_at(o + 16)?,
            u64_at(o + 32)?,
        ));
    }
    let cstr = |off: usize| -> Result<String, ElfError> {
        let rest = data.get(off..).ok_or(bad("string offset"))?;
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(bad("unterminated string"))?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let mut out = Dynamic::default();
    if let Some(&(_, off, _, _)) = phdrs.iter().find(|p| p.0 == PT_INTERP) {
        out.interpreter = Some(cstr(off as usize)?);
    }
    let Some(&(_, dyn_off, _, dyn_size)) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(out);
    };
    let mut strtab_vaddr = None;
    let mut needed_offsets = Vec::new();
    for i in 0..(dyn_size as usize / 16) {
        let o = dyn_off as usize + i * 16;
        let (tag, val) = (u64_at(o)?, u64_at(o + 8)?);
        match tag {
            0 => break,
            DT_NEEDED => needed_offsets.push(val),
            DT_STRTAB => strtab_vaddr = Some(val),
            _ => {}
        }
    }
    if needed_offsets.is_empty() {
        return Ok(out);
    }
    let strtab_vaddr = strtab_vaddr.ok_or(bad("DT_NEEDED without DT_STRTAB"))?;
    // DT_STRTAB is a virtual address; the PT_LOAD segment holding it maps it back to a file offset.
    let strtab = phdrs
        .iter()
        .find(|p| p.0 == PT_LOAD && p.2 <= strtab_vaddr && strtab_vaddr < p.2 + p.3)
        .map(|p| strtab_vaddr - p.2 + p.1)
        .ok_or(bad("DT_STRTAB outside every PT_LOAD"))?;
    for n in needed_offsets {
        out.needed.push(cstr((strtab + n) as usize)?);
    }
    Ok(out)
}

/// Every file the loader opens to run `binary`: image path → host file. The interpreter goes to its
/// `PT_INTERP` path, libraries to the first library directory that holds them (transitively). Empty for
/// a static binary.
pub fn runtime_files(binary: &Path) -> Result<BTreeMap<String, PathBuf>, ElfError> {
    let mut out = BTreeMap::new();
    let mut queue = vec![binary.to_owned()];
    let mut seen = std::collections::HashSet::new();
    while let Some(file) = queue.pop() {
        let data = std::fs::read(&file).map_err(|source| ElfError::Io {
            path: file.clone(),
            source,
        })?;
        let dynamic = parse(&file, &data)?;
        if let Some(interp) = dynamic.interpreter {
            // libc names the loader as DT_NEEDED too; the loader satisfies that itself, so no second copy.
            if let Some(name) = Path::new(&interp).file_name() {
                seen.insert(name.to_string_lossy().into_owned());
            }
            out.insert(interp.clone(), PathBuf::from(&interp));
        }
        for lib in dynamic.needed {
            if !seen.insert(lib.clone()) {
                continue;
            }
            let found = LIBRARY_DIRS
                .iter()
                .map(|d| Path::new(d).join(&lib))
                .find(|p| p.exists())
                .ok_or_else(|| ElfError::MissingLibrary {
                    binary: file.clone(),
                    library: lib.clone(),
                    searched: LIBRARY_DIRS,
                })?;
            out.insert(found.display().to_string(), found.clone());
            queue.push(found);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_needs_libc_and_the_loader() {
        let ls = Path::new("/bin/ls");
        let d = parse(ls, &std::fs::read(ls).unwrap()).unwrap();
        assert_eq!(
            d.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(d.needed.iter().any(|n| n == "libc.so.6"), "{d:?}");
        let files = runtime_files(ls).unwrap();
        assert!(files.keys().any(|k| k.ends_with("/libc.so.6")), "{files:?}");
        assert!(files.contains_key("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            files
                .keys()
                .filter(|k| k.ends_with("/ld-linux-x86-64.so.2"))
                .count(),
            1,
            "one loader: {files:?}"
        );
    }

    #[test]
    fn a_static_program_needs_nothing() {
        let bb = Path::new("/bin/busybox");
        assert!(runtime_files(bb).unwrap().is_empty());
    }

    #[test]
    fn not_elf_is_named() {
        let p = Path::new("/etc/hostname");
        assert!(matches!(
            parse(p, b"#!/bin/sh\n"),
            Err(ElfError::NotElf64(_))
        ));
    }
}
