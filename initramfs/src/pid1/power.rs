//! The ACPI power button (qemu's `system_powerdown`, a real button): the kernel reports it as KEY_POWER on an
//! input device and sends no signal, so PID 1 watches the device and turns a press into SIGPWR for itself.

use std::io::Read;

use super::log;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Starts one watcher thread per input device that has KEY_POWER (found by name); returns how many.
pub fn watch_buttons() -> usize {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let dev_name = std::fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
        if !dev_name.trim().eq_ignore_ascii_case("power button") {
            continue;
        }
        let path = format!("/dev/input/{name}");
        let Ok(mut f) = std::fs::File::open(&path) else {
            log::error(format!("power button {path}: cannot open"));
            continue;
        };
        n += 1;
        std::thread::spawn(move || {
            // struct input_event on 64-bit: timeval (16), type u16, code u16, value i32.
            let mut ev = [0u8; 24];
            while f.read_exact(&mut ev).is_ok() {
                let ty = u16::from_ne_bytes([ev[16], ev[17]]);
                let code = u16::from_ne_bytes([ev[18], ev[19]]);
                let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if ty == EV_KEY && code == KEY_POWER && value == 1 {
                    log::info("power button pressed");
                    // SAFETY: signalling ourselves; the main loop waits for SIGPWR.
                    unsafe { libc::kill(1, libc::SIGPWR) };
                }
            }
        });
    }
    if n == 0 {
        log::error("no ACPI power button found (button/evdev modules missing?); power off with a signal to PID 1");
    } else {
        log::info(format!("watching {n} power button(s)"));
    }
    n
}
