//! The few packets of the GDB remote serial protocol the power-cut tests need to stop QEMU at an
//! exact point of the firmware: set a breakpoint, continue, and learn whether the guest stopped
//! there or ended.
//!
//! Cutting the power at "some milliseconds after a message" depends on how busy the host is;
//! a breakpoint on the flash driver's write-through makes a cut land before the `k`-th flash
//! write, whatever the load, so every run of a test cuts at the same places.
// Every failure is returned with its cause: the harness adds QEMU's output and fails the test.

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
    /// When the whole debugged boot must have ended.
    deadline: Instant,
}

impl Gdb {
    /// Connects to the stub listening on `socket`, waiting until `deadline` for QEMU to create
    /// it (and giving up early once `ended` says QEMU has exited); every later reply is waited
    /// for until `deadline` as well.
    pub fn connect(
        socket: &Path,
        deadline: Instant,
        mut ended: impl FnMut() -> bool,
    ) -> Result<Gdb, String> {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if ended() => return Err("QEMU exited before its gdbstub answered".into()),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("QEMU's gdbstub did not answer: {e}")),
            }
        };
        let mut gdb = Gdb {
            stream,
            pending: Vec::new(),
            breakpoint: None,
            deadline,
        };
        gdb.arm_timeout()?;
        Ok(gdb)
    }

    /// Sets the breakpoint, on the Thumb instruction at `addr`.
    pub fn break_at(&mut self, addr: u64) -> Result<(), String> {
        if self.breakpoint.is_some() {
            return Err("one breakpoint at a time".into());
        }
        self.request(&format!("Z0,{addr:x},2"))?;
        self.breakpoint = Some((addr, false));
        Ok(())
    }

    /// Resumes the guest until it stops at the breakpoint again or ends.
    pub fn cont(&mut self) -> Result<Stop, String> {
        if let Some((addr, true)) = self.breakpoint {
            // QEMU would stop at once on the breakpoint it is halted on: step past it with the
            // breakpoint removed, then put it back, as debuggers do.
            self.request(&format!("z0,{addr:x},2"))?;
            if self.resume("s")? == Stop::Ended {
                return Ok(Stop::Ended);
            }
            self.request(&format!("Z0,{addr:x},2"))?;
        }
        let stop = self.resume("c")?;
        if let Some((_, halted)) = &mut self.breakpoint {
            *halted = stop == Stop::Break;
        }
        Ok(stop)
    }

    fn resume(&mut self, how: &str) -> Result<Stop, String> {
        self.send(how);
        match self.recv()? {
            None => Ok(Stop::Ended),
            Some(reply) if reply.starts_with('W') || reply.starts_with('X') => Ok(Stop::Ended),
            Some(reply) if reply.starts_with('T') || reply.starts_with('S') => Ok(Stop::Break),
            Some(reply) => Err(format!("unexpected gdbstub reply to {how:?}: {reply:?}")),
        }
    }

    /// Sends a request that the stub must answer with `OK`.
    fn request(&mut self, packet: &str) -> Result<(), String> {
        self.send(packet);
        match self.recv()? {
            Some(reply) if reply == "OK" => Ok(()),
            reply => Err(format!("QEMU's gdbstub refused {packet:?}: {reply:?}")),
        }
    }

    /// Bounds the next read by what is left until the deadline.
    fn arm_timeout(&mut self) -> Result<(), String> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("the boot ran past its deadline under the debugger")?;
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())
    }

    fn send(&mut self, packet: &str) {
        let sum = packet.bytes().fold(0u8, |sum, b| sum.wrapping_add(b));
        // A stub that has gone away (the guest ended) shows up on the next receive.
        let _ = self
            .stream
            .write_all(format!("${packet}#{sum:02x}").as_bytes());
    }

    /// The next packet's payload (acknowledged), or `None` once the stub closed the connection.
    fn recv(&mut self) -> Result<Option<String>, String> {
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
                        return Ok(Some(payload));
                    }
                }
            }
            self.arm_timeout()?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("the boot ran past its deadline under the debugger".into())
                }
                Err(e) => return Err(format!("no answer from QEMU's gdbstub: {e}")),
            }
        }
    }
}
