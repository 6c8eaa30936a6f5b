//! What the CLI's test files share.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout};
use std::time::{Duration, Instant};

/// Reads a spawned `sessionbus up`'s stdout (piped, as its stderr) until its banner is
/// whole, and returns the banner with the rest of stdout still to read; panics with the banner and the process's errors when
/// it did not come up within 30 s.
pub fn up_banner(child: &mut Child) -> (String, BufReader<ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !banner.contains("try: NATS_URL=") && Instant::now() < deadline {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            break;
        }
        banner.push_str(&line);
    }
    if !banner.contains("sessionbus is up") {
        let mut errors = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut errors));
        panic!("`up` did not come up: {banner}\n{errors}");
    }
    (banner, out)
}
