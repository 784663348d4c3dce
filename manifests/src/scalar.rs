//! Reduction of a 64-byte integer mod `l`, the order of the prime-order subgroup: the ed25519
//! challenge `k = SHA-512(R || A || M) mod l` (FORMAT.md §3, rule 3).
//!
//! curve25519-dalek's `Scalar::from_bytes_mod_order_wide` is constant time, through two
//! Montgomery multiplications: about 2.5 KiB of a Cortex-M3 bootloader's flash. The challenge
//! is a hash of public bytes (the signature, the key, the signed document), so a variable-time
//! reduction leaks nothing, and a byte at a time with one quotient estimate per byte it is a
//! few hundred bytes of code. The tests hold it to curve25519-dalek's answers.

/// `l = 2^252 + c` as eight little-endian `u32` limbs: `c` (below `2^125`) is the low four.
const L: [u32; 8] = [
    0x5cf5_d3ed,
    0x5812_631a,
    0xa2f7_9cd6,
    0x14de_f9de,
    0,
    0,
    0,
    0x1000_0000,
];

/// The little-endian integer `wide` reduced mod `l`: the canonical (below `l`) little-endian
/// encoding of the scalar, as `Scalar::from_bytes_mod_order_wide` gives.
///
/// Horner's rule from the most significant byte: with `r < l` before a step, `r' = 256 r + b`
/// is below `256 l < 2^261`. Writing `r' = q 2^252 + low` (`q = r' >> 252 < 2^9`,
/// `low < 2^252`), `r' - q l = low - q c` lies in `(-2^134, 2^252)`: below `l`, and above `-l`,
/// so at most one addition of `l` makes it the new `r < l`.
pub(crate) fn reduce_wide(wide: &[u8; 64]) -> [u8; 32] {
    // Invariant: r < l (so r < 2^253).
    let mut r = [0u32; 8];
    for &byte in wide.iter().rev() {
        // r' = 256 r + byte: the low 256 bits in `r`, bits 256 and up (below 2^5) in `top`.
        let mut top = u32::from(byte);
        for limb in r.iter_mut() {
            let out = *limb >> 24;
            *limb = (*limb << 8) | top;
            top = out;
        }
        let [.., high] = &mut r;
        let q = (top << 4) | (*high >> 28);
        *high &= 0x0fff_ffff;
        // r = low - q c, in two's complement over 256 bits: `owed` is what the next limb must
        // still give up (q c limb by limb, plus borrows). q < 2^9 and every limb of c is below
        // 2^32, so `owed` stays below 2^42: the wrapping operations below never wrap.
        let mut owed: u64 = 0;
        for (i, limb) in r.iter_mut().enumerate() {
            let c = if i < 4 {
                L.get(i).copied().unwrap_or(0)
            } else {
                0
            };
            let take = u64::from(q).wrapping_mul(u64::from(c)).wrapping_add(owed);
            // The low 32 bits of `take` come off this limb; the rest is owed by the next.
            let (value, borrow) = limb.overflowing_sub(take as u32);
            *limb = value;
            owed = (take >> 32).wrapping_add(u64::from(borrow));
        }
        // Something still owed past the top limb: low - q c was negative (and above -l), so
        // adding l (modulo 2^256) gives the non-negative remainder.
        if owed != 0 {
            let mut carry = false;
            for (limb, &l) in r.iter_mut().zip(L.iter()) {
                let (sum, c1) = limb.overflowing_add(l);
                let (sum, c2) = sum.overflowing_add(u32::from(carry));
                *limb = sum;
                carry = c1 || c2;
            }
        }
    }
    let mut out = [0u8; 32];
    for (bytes, limb) in out.chunks_exact_mut(4).zip(r) {
        bytes.copy_from_slice(&limb.to_le_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // fixed test values
mod tests {
    use super::*;
    use curve25519_dalek::Scalar;
    use proptest::prelude::*;
    extern crate alloc;
    use alloc::vec::Vec;

    fn dalek(wide: &[u8; 64]) -> [u8; 32] {
        Scalar::from_bytes_mod_order_wide(wide).to_bytes()
    }

    /// `l` as little-endian bytes.
    fn l_bytes() -> [u8; 32] {
        let mut out = [0u8; 32];
        for (bytes, limb) in out.chunks_exact_mut(4).zip(L) {
            bytes.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// `m * l` for a small multiplier, as a 64-byte little-endian integer (with `shift` more
    /// zero bytes below: `m l 256^shift`).
    fn multiple_of_l(m: u64, shift: usize) -> [u8; 64] {
        let l = l_bytes();
        let mut out = [0u8; 64];
        let mut carry = 0u128;
        for i in 0..(64 - shift) {
            let v = u128::from(*l.get(i).unwrap_or(&0)) * u128::from(m) + carry;
            out[i + shift] = v as u8;
            carry = v >> 8;
        }
        out
    }

    /// `x + delta` modulo `2^512`, little-endian.
    fn plus(mut x: [u8; 64], delta: i64) -> [u8; 64] {
        let mut carry = i128::from(delta);
        for b in x.iter_mut() {
            let v = i128::from(*b) + carry;
            *b = v.rem_euclid(256) as u8;
            carry = v.div_euclid(256);
        }
        x
    }

    #[test]
    fn agrees_with_curve25519_dalek_at_the_edges() {
        let mut edges = Vec::new();
        for delta in -2..=2 {
            // 0, l - 1, l, l + 1, multiples of l (the largest below 2^512 too), 2^512 - 1.
            edges.push(plus([0; 64], delta));
            for shift in [0, 1, 16, 31, 32] {
                for m in [1, 2, 15, 16, 255, 256, u64::MAX] {
                    edges.push(plus(multiple_of_l(m, shift), delta));
                }
            }
            // Powers of two, around 2^252, 2^256 and 2^511.
            for bit in [8, 124, 125, 252, 253, 255, 256, 260, 261, 504, 511] {
                let mut x = [0u8; 64];
                x[bit / 8] = 1 << (bit % 8);
                edges.push(plus(x, delta));
            }
        }
        // floor((2^512 - 1) / l) l: the largest multiple of l the input can hold.
        let largest = {
            // 2^512 - 1 - ((2^512 - 1) mod l): no borrows, as every byte of 2^512 - 1 is 0xff.
            let rem = dalek(&[0xff; 64]);
            let mut q = [0xff; 64];
            for (b, r) in q.iter_mut().zip(rem) {
                *b -= r;
            }
            q
        };
        for delta in -2..=0 {
            edges.push(plus(largest, delta));
        }
        edges.push([0xff; 64]);
        edges.push([0x80; 64]);
        edges.push([0x7f; 64]);
        for i in 0..64 {
            let mut one_byte = [0u8; 64];
            one_byte[i] = 0xff;
            edges.push(one_byte);
        }
        for wide in &edges {
            assert_eq!(reduce_wide(wide), dalek(wide), "{wide:02x?}");
        }
        assert_eq!(reduce_wide(&largest), [0; 32]);
        assert_eq!(reduce_wide(&multiple_of_l(u64::MAX, 24)), [0; 32]);
        let mut l = [0u8; 64];
        l[..32].copy_from_slice(&l_bytes());
        assert_eq!(reduce_wide(&l), [0; 32]);
        assert_eq!(reduce_wide(&plus(l, -1))[..], plus(l, -1)[..32]);
    }

    #[test]
    fn the_limbs_are_l() {
        // l = 2^252 + 27742317777372353535851937790883648493.
        let c: u128 = 27_742_317_777_372_353_535_851_937_790_883_648_493;
        let mut expected = [0u8; 32];
        expected[..16].copy_from_slice(&c.to_le_bytes());
        expected[31] = 0x10;
        assert_eq!(l_bytes(), expected);
        // And l reduces to zero in curve25519-dalek too.
        let mut wide = [0u8; 64];
        wide[..32].copy_from_slice(&expected);
        assert_eq!(dalek(&wide), [0; 32]);
    }

    proptest! {
        #[test]
        fn agrees_with_curve25519_dalek_on_random_input(wide in prop::array::uniform32(any::<u8>())
            .prop_flat_map(|lo| prop::array::uniform32(any::<u8>()).prop_map(move |hi| {
                let mut w = [0u8; 64];
                w[..32].copy_from_slice(&lo);
                w[32..].copy_from_slice(&hi);
                w
            }))) {
            prop_assert_eq!(reduce_wide(&wide), dalek(&wide));
        }

        #[test]
        fn agrees_with_curve25519_dalek_near_multiples_of_l(
            m in any::<u64>(),
            shift in 0usize..24,
            delta in -3i8..=3,
        ) {
            // m l 256^shift + delta, modulo 2^512 (both sides reduce the same bytes).
            let wide = plus(multiple_of_l(m, shift), i64::from(delta));
            prop_assert_eq!(reduce_wide(&wide), dalek(&wide));
        }
    }
}
