//! TEMPORARY diagnostic (not for commit): per-stage timestamps of load-probe messages.
#![allow(missing_docs, clippy::all)]
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static ON: OnceLock<bool> = OnceLock::new();
static LOG: Mutex<Vec<(u8, u64, u64)>> = Mutex::new(Vec::new());
static PENDING: Mutex<Vec<u64>> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    *ON.get_or_init(|| {
        let on = std::env::var_os("PROBE_TRACE").is_some();
        if on {
            std::thread::spawn(|| {
                let path = format!("/tmp/probe-trace-{}.txt", std::process::id());
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    let lines = std::mem::take(&mut *LOG.lock().unwrap());
                    if lines.is_empty() {
                        continue;
                    }
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
                    let mut s = String::new();
                    for (stage, seq, t) in lines {
                        s.push_str(&format!("{stage} {seq} {t}\n"));
                    }
                    f.write_all(s.as_bytes()).unwrap();
                }
            });
        }
        on
    })
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Probe sequence numbers in `bytes`: `0:<seq>:<digits>:<digits>:`.
pub fn scan(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'0' && bytes[i + 1] == b':' && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            let mut j = i + 2;
            let mut fields = [0u64; 3];
            let mut ok = true;
            for field in &mut fields {
                let start = j;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    *field = *field * 10 + (bytes[j] - b'0') as u64;
                    j += 1;
                }
                if j == start || j >= bytes.len() || bytes[j] != b':' {
                    ok = false;
                    break;
                }
                j += 1;
            }
            if ok && fields[1] > 1_000_000_000 {
                out.push(fields[0]);
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

pub fn record(stage: u8, bytes: &[u8]) {
    if !enabled() {
        return;
    }
    let t = now();
    let seqs = scan(bytes);
    if seqs.is_empty() {
        return;
    }
    let mut log = LOG.lock().unwrap();
    for s in seqs {
        log.push((stage, s, t));
    }
}

pub fn record_seqs(stage: u8, seqs: &[u64], t: u64) {
    let mut log = LOG.lock().unwrap();
    for &s in seqs {
        log.push((stage, s, t));
    }
}

pub fn pend(bytes: &[u8]) {
    if !enabled() {
        return;
    }
    PENDING.lock().unwrap().extend(scan(bytes));
}

pub fn flush_pending(stage: u8) {
    if !enabled() {
        return;
    }
    let seqs = std::mem::take(&mut *PENDING.lock().unwrap());
    record_seqs(stage, &seqs, now());
}
