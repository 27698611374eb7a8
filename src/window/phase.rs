//! Where on the hop grid a device's windows end. With every device on the same grid (multiples of the hop
//! since the epoch) their windows close in one burst per hop and the last window of a burst waits for all
//! the others' inference; a per-device phase spreads the closes evenly over the hop. The phase is a pure
//! function of the device id, so clients (replay, load generator) can compute it too.

/// How window ends are placed on the hop grid.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum WindowPhase {
    /// Every device's windows end on multiples of the hop since the epoch.
    #[default]
    Aligned,
    /// Each device's windows end at `k · hop + phase(device id)`, the phase a multiple of the quantum.
    PerDevice,
}

impl WindowPhase {
    /// The phase (ns) of `device_id`'s window ends under this mode: 0 when aligned.
    pub fn phase_of(self, device_id: &str, hop_nanos: i64, quantum_nanos: i64) -> i64 {
        match self {
            Self::Aligned => 0,
            Self::PerDevice => device_phase(device_id, hop_nanos, quantum_nanos),
        }
    }
}

/// The finest step a phase may take: a multiple of every modality's sample period (in whole ns), so a
/// device streaming on whole seconds still has its samples exactly on its window grid; 1 ms when the
/// periods are not whole nanoseconds or their common multiple exceeds the hop.
pub fn phase_quantum(periods_nanos: impl IntoIterator<Item = f64>, hop_nanos: i64) -> i64 {
    const FALLBACK: i64 = 1_000_000;
    let mut lcm: i64 = 1;
    for p in periods_nanos {
        if p.fract() != 0.0 || p < 1.0 {
            return FALLBACK.min(hop_nanos).max(1);
        }
        let p = p as i64;
        lcm = lcm / gcd(lcm, p) * p;
        if lcm > hop_nanos {
            return FALLBACK.min(hop_nanos).max(1);
        }
    }
    lcm
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The phase (ns, in `[0, hop)`, a multiple of `quantum`) of a device's window ends: FNV-1a of the id's
/// bytes, modulo the number of quantum steps in a hop.
pub fn device_phase(device_id: &str, hop_nanos: i64, quantum_nanos: i64) -> i64 {
    let slots = (hop_nanos / quantum_nanos.max(1)).max(1) as u64;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % slots) as i64 * quantum_nanos.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn the_quantum_is_a_common_multiple_of_the_sample_periods() {
        assert_eq!(phase_quantum([40.0 * MS as f64], 1000 * MS), 40 * MS);
        assert_eq!(
            phase_quantum([20.0 * MS as f64, 40.0 * MS as f64], 1000 * MS),
            40 * MS
        );
        // 3 Hz has no whole-nanosecond period.
        assert_eq!(phase_quantum([1e9 / 3.0], 1000 * MS), MS);
    }

    #[test]
    fn phases_are_stable_spread_and_on_the_quantum() {
        let hop = 1000 * MS;
        let phases: Vec<i64> = (0..1000)
            .map(|i| device_phase(&format!("dev-{i}"), hop, 40 * MS))
            .collect();
        assert!(
            phases
                .iter()
                .all(|p| (0..hop).contains(p) && p % (40 * MS) == 0)
        );
        let mut per_slot = [0usize; 25];
        for p in &phases {
            per_slot[(p / (40 * MS)) as usize] += 1;
        }
        assert!(per_slot.iter().all(|&n| n > 10), "{per_slot:?}");
        assert_eq!(
            device_phase("dev-1", hop, 40 * MS),
            phases[1],
            "a pure function of the id"
        );
        // Documented examples (docs/windowing.md): FNV-1a 64 of the id modulo 25, times 40 ms.
        assert_eq!(device_phase("dev-2", hop, 40 * MS), 560 * MS);
        assert_eq!(device_phase("watch-7", hop, 40 * MS), 120 * MS);
    }
}
