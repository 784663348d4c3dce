//! The few packets of the GDB remote serial protocol the power-cut tests need to stop QEMU at an
//! exact point of the firmware: set a breakpoint, continue, and learn whether the guest stopped
//! there or ended.
//!
//! Cutting the power at "some milliseconds after a message" depends on how busy the host is;
//! a breakpoint on the flash driver's write-through makes a cut land before the `k`-th flash
//! write, whatever the load, so every run of a test cuts at the same places.
// Test harness: a broken connection must stop the test loudly, with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the guest stopped after [`Gdb::cont`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It reached a breakpoint (or another trap); it is halted.
    Break,
    /// The guest ended (QEMU reported its exit, or closed the connection on exit).
    Ended,
}

/// A connection to QEMU's gdbstub.
pub struct Gdb {
    stream: UnixStream,
    pending: Vec<u8>,
    /// The breakpoint set, and whether the guest is halted on it.
    breakpoint: Option<(u64, bool)>,
}

impl Gdb {
    /// Connects to the stub listening on `socket`, waiting up to `timeout` for QEMU to create
    /// it; every later reply is waited for at most `timeout` as well.
    pub fn connect(socket: &Path, timeout: Duration) -> Gdb {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("QEMU's gdbstub at {} did not answer: {e}", socket.display()),
            }
        };
        stream.set_read_timeout(Some(timeout)).unwrap();
        Gdb {
            stream,
            pending: Vec::new(),
            breakpoint: None,
        }
    }

    /// Sets the breakpoint, on the Thumb instruction at `addr`.
    pub fn break_at(&mut self, addr: u64) {
        assert!(self.breakpoint.is_none(), "one breakpoint at a time");
        self.request(&format!("Z0,{addr:x},2"));
        self.breakpoint = Some((addr, false));
    }

    /// Resumes the guest until it stops at the breakpoint again or ends.
    pub fn cont(&mut self) -> Stop {
        if let Some((addr, true)) = self.breakpoint {
            // QEMU would stop at once on the breakpoint it is halted on: step past it with the
            // breakpoint removed, then put it back, as debuggers do.
            self.request(&format!("z0,{addr:x},2"));
            if self.resume("s") == Stop::Ended {
                return Stop::Ended;
            }
            self.request(&format!("Z0,{addr:x},2"));
        }
        let stop = self.resume("c");
        if let Some((_, halted)) = &mut self.breakpoint {
            *halted = stop == Stop::Break;
        }
        stop
    }

    fn resume(&mut self, how: &str) -> Stop {
        self.send(how);
        match self.recv() {
            None => Stop::Ended,
            Some(reply) if reply.starts_with('W') || reply.starts_with('X') => Stop::Ended,
            Some(reply) if reply.starts_with('T') || reply.starts_with('S') => Stop::Break,
            Some(reply) => panic!("unexpected gdbstub reply to {how:?}: {reply:?}"),
        }
    }

    /// Sends a request that the stub must answer with `OK`.
    fn request(&mut self, packet: &str) {
        self.send(packet);
        let reply = self.recv();
        assert_eq!(
            reply.as_deref(),
            Some("OK"),
            "QEMU's gdbstub refused {packet:?}"
        );
    }

    fn send(&mut self, packet: &str) {
        let sum = packet.bytes().fold(0u8, |sum, b| sum.wrapping_add(b));
        // A stub that has gone away (the guest ended) shows up on the next receive.
        let _ = self
            .stream
            .write_all(format!("${packet}#{sum:02x}").as_bytes());
    }

    /// The next packet's payload (acknowledged), or `None` once the stub closed the connection.
    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 512];
        loop {
            // Acknowledgements ('+') and anything before a packet start are skipped.
            if let Some(start) = self.pending.iter().position(|&b| b == b'$') {
                let body = self.pending.get(start + 1..).unwrap_or_default();
                // The end marker is followed by two checksum digits.
                if let Some(end) = body.iter().position(|&b| b == b'#') {
                    if body.len() >= end + 3 {
                        let payload = String::from_utf8_lossy(&body[..end]).into_owned();
                        self.pending.drain(..start + 1 + end + 3);
                        let _ = self.stream.write_all(b"+");
                        return Some(payload);
                    }
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no answer from QEMU's gdbstub: {e}"),
            }
        }
    }
}
