//! Property tests: across any sequence of staging, boots, confirms and power cuts, the stored
//! security counter and key-set version only move forward, only rise into an Idle state (a
//! confirm or the boot of a confirmed image), every boot with the power on succeeds, and no
//! boot runs an image below the stored minimums.

// Test and benchmark code: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use sigil_bootloader::sim::{Cut, Fault};
use sigil_bootloader::{Error, Phase};

type Dev = Rig<4, 256>;

/// Bundles with security counters 1..=4 and key-set versions 1..=2.
fn pool() -> &'static [Vec<u8>] {
    static POOL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut out = Vec::new();
        for counter in 1..=4u32 {
            for ksv in 1..=2u32 {
                out.push(bundle(&Spec {
                    counter,
                    key_set_version: ksv,
                    payload_len: 400 + 150 * counter as usize,
                    payload_seed: (counter * 2 + ksv) as u8,
                    ..Spec::default()
                }));
            }
        }
        out
    })
}

#[derive(Debug, Clone)]
enum Op {
    Stage(usize),
    Boot,
    BootCut { at: u64, cut: u8 },
    Confirm,
    ConfirmCut { at: u64, cut: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..8usize).prop_map(Op::Stage),
        4 => Just(Op::Boot),
        3 => (0..60u64, 0..4u8).prop_map(|(at, cut)| Op::BootCut { at, cut }),
        2 => Just(Op::Confirm),
        1 => (0..2u64, 0..4u8).prop_map(|(at, cut)| Op::ConfirmCut { at, cut }),
    ]
}

fn cut(kind: u8) -> Cut {
    match kind {
        0 => Cut::Clean,
        1 => Cut::Torn { landed: 41 },
        2 => Cut::PartialErase { erased: 128 },
        _ => Cut::ScatteredErase { seed: 7 },
    }
}

fn apply(dev: &mut Dev, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Stage(i) => {
            let idle = dev.state().phase == Phase::Idle;
            let staged = dev.stage(&pool()[i]);
            prop_assert_eq!(staged.is_ok(), idle, "staging outside Idle: {:?}", staged);
        }
        Op::Boot | Op::BootCut { .. } => {
            if let Op::BootCut { at, cut: kind } = *op {
                dev.flash.arm(Fault {
                    at_op: at,
                    cut: cut(kind),
                });
            }
            let booted = dev.boot();
            dev.flash.disarm();
            if !dev.flash.is_powered() {
                dev.flash.power_on();
                return Ok(());
            }
            let image = booted
                .map_err(|e| TestCaseError::fail(format!("boot failed with power on: {e}")))?;
            let state = dev.state();
            prop_assert!(image.security_counter() >= state.min_security_counter);
            prop_assert!(image.key_set_version() >= state.min_key_set_version);
        }
        Op::Confirm | Op::ConfirmCut { .. } => {
            if let Op::ConfirmCut { at, cut: kind } = *op {
                dev.flash.arm(Fault {
                    at_op: at,
                    cut: cut(kind),
                });
            }
            let phase = dev.state().phase;
            let confirmed = dev.confirm();
            dev.flash.disarm();
            if !dev.flash.is_powered() {
                dev.flash.power_on();
                return Ok(());
            }
            match phase {
                Phase::Idle | Phase::Trial => prop_assert!(confirmed.is_ok()),
                other => prop_assert_eq!(confirmed, Err(Error::WrongPhase(other))),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stored_counters_only_move_forward(ops in proptest::collection::vec(op(), 1..24)) {
        let mut dev = Dev::new(10, 0xFF);
        dev.provision(&pool()[2]); // counter 2, key set 1
        dev.boot().unwrap();
        let mut before = dev.state();
        for op in &ops {
            apply(&mut dev, op)?;
            let after = dev.state();
            prop_assert!(after.min_security_counter >= before.min_security_counter, "counter fell after {:?}", op);
            prop_assert!(after.min_key_set_version >= before.min_key_set_version, "key set fell after {:?}", op);
            let raised = after.min_security_counter != before.min_security_counter
                || after.min_key_set_version != before.min_key_set_version;
            prop_assert!(!raised || after.phase == Phase::Idle, "raised outside Idle after {:?}", op);
            prop_assert_eq!(dev.flash.violations(), 0);
            before = after;
        }
    }
}
