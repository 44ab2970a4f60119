//! Which CPU cores the workers run on.
//!
//! Phones mix fast and slow cores (e.g. one prime + three big + four LITTLE). A decode product
//! split over all of them waits for the slow ones, and a worker the scheduler moves to a
//! LITTLE core slows every product it takes part in. So by default ([`CpuCores::Auto`]) the
//! workers run on the big cores only, and there are as many workers as big cores: the cores
//! whose capacity is at least half the largest. The capacity is the kernel's `cpu_capacity`
//! (the scheduler's relative speed, 0–1024, on ARM kernels: Android's) or, where that is
//! missing, `cpufreq/cpuinfo_max_freq`. A machine whose cores are alike (desktops, servers,
//! this project's CI) is left alone: no pinning, one worker per core.
//!
//! Pinning is `sched_setaffinity` on Linux and Android. Elsewhere (iOS, macOS: no affinity
//! API; the OS places threads by their QoS class) a pin request is reported as not applied and
//! the workers run unpinned.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::{GemmaError, Result};

/// Where the CPU workers run (process-wide: the first engine loaded decides).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CpuCores {
    /// The big cores of a big.LITTLE CPU, one worker each; every core where they are alike.
    #[default]
    Auto,
    /// Every core, unpinned (the OS scheduler decides).
    All,
    /// These cores (as the kernel numbers them), one worker each unless a thread count is set.
    Only(Vec<usize>),
}

impl std::str::FromStr for CpuCores {
    type Err = GemmaError;

    /// `auto`, `all`, or a list of cores and ranges: `4-7`, `0,2,5`.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim() {
            "auto" => return Ok(CpuCores::Auto),
            "all" => return Ok(CpuCores::All),
            _ => {}
        }
        let bad = || {
            GemmaError::InvalidArgument(format!(
                "cpu cores `{text}`: expected auto, all, or cores like 4-7 or 0,2,5"
            ))
        };
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
        let mut cores = Vec::new();
        for part in text.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b || b >= MAX_CPUS {
                        return Err(bad());
                    }
                    cores.extend(a..=b);
                }
                None => cores.push(number(part)?),
            }
        }
        Ok(CpuCores::Only(cores))
    }
}

/// At most this many CPUs are read from sysfs (a bound on a hostile or odd tree).
const MAX_CPUS: usize = 1024;

/// The cores `choice` names, or `None` for "every core, unpinned".
pub fn resolve(choice: &CpuCores) -> Result<Option<Vec<usize>>> {
    match choice {
        CpuCores::All => Ok(None),
        CpuCores::Auto => Ok(big_cores(Path::new("/sys/devices/system/cpu"))),
        CpuCores::Only(cores) => {
            if cores.is_empty() {
                return Err(GemmaError::InvalidArgument(
                    "cpu cores: give at least one core".into(),
                ));
            }
            if let Some(c) = cores.iter().find(|&&c| c >= MAX_CPUS) {
                return Err(GemmaError::InvalidArgument(format!(
                    "cpu core {c} is out of range (0..{MAX_CPUS})"
                )));
            }
            if let Some(allowed) = current_thread_cores()
                && let Some(c) = cores.iter().find(|c| !allowed.contains(c))
            {
                return Err(GemmaError::InvalidArgument(format!(
                    "cpu core {c} is not available to this process (it may run on {allowed:?})"
                )));
            }
            let mut cores = cores.clone();
            cores.sort_unstable();
            cores.dedup();
            Ok(Some(cores))
        }
    }
}

/// The big cores under a sysfs CPU directory (`/sys/devices/system/cpu`): those whose
/// capacity is at least half the largest. `None` when the cores are alike or their capacities
/// cannot be read.
pub fn big_cores(sys_cpu: &Path) -> Option<Vec<usize>> {
    let mut capacities: Vec<(usize, u64)> = std::fs::read_dir(sys_cpu)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let id: usize = name.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            if id >= MAX_CPUS {
                return None;
            }
            let dir = sys_cpu.join(format!("cpu{id}"));
            let capacity = read_number(&dir.join("cpu_capacity"))
                .or_else(|| read_number(&dir.join("cpufreq/cpuinfo_max_freq")))?;
            Some((id, capacity))
        })
        .collect();
    capacities.sort_unstable();
    let largest = capacities.iter().map(|&(_, c)| c).max()?;
    let big: Vec<usize> = capacities
        .iter()
        .filter(|&&(_, c)| c.saturating_mul(2) >= largest)
        .map(|&(id, _)| id)
        .collect();
    (big.len() < capacities.len()).then_some(big)
}

/// A small decimal number in a sysfs file.
fn read_number(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

static PROCESS_CORES: OnceLock<Option<Vec<usize>>> = OnceLock::new();

/// Records the process's worker cores (the first call wins, as for the thread pool).
pub fn set_process_cores(cores: Option<Vec<usize>>) {
    let _ = PROCESS_CORES.set(cores);
}

/// The cores worker threads are pinned to (`None`: unpinned).
pub fn process_cores() -> Option<&'static [usize]> {
    PROCESS_CORES.get().and_then(|c| c.as_deref())
}

/// Pins the calling thread to the process's worker cores, if any were chosen.
pub fn pin_worker() {
    if let Some(cores) = process_cores()
        && let Err(e) = pin_current_thread(cores)
    {
        log::warn!("worker thread not pinned to cores {cores:?}: {e}");
    }
}

/// Restricts the calling thread to `cores`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn pin_current_thread(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bit set on the stack, initialised by CPU_ZERO before use;
    // CPU_SET is only given indices below CPU_SETSIZE; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cores {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restricts the calling thread to `cores` (no affinity API on this OS).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn pin_current_thread(_cores: &[usize]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this OS has no thread affinity API",
    ))
}

/// The cores the calling thread may run on (Linux/Android; `None` elsewhere).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn current_thread_cores() -> Option<Vec<usize>> {
    // SAFETY: as in `pin_current_thread`; CPU_ISSET reads the set the kernel filled.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn current_thread_cores() -> Option<Vec<usize>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed on drop.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A sysfs-like tree: `cpuN/cpu_capacity` or `cpuN/cpufreq/cpuinfo_max_freq`.
    fn tree(cpus: &[(usize, Option<u64>, Option<u64>)]) -> Dir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = Dir(std::env::temp_dir().join(format!(
            "gemmakit-cores-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        )));
        for &(id, capacity, freq) in cpus {
            let cpu = dir.path().join(format!("cpu{id}"));
            std::fs::create_dir_all(cpu.join("cpufreq")).unwrap();
            if let Some(c) = capacity {
                std::fs::write(cpu.join("cpu_capacity"), format!("{c}\n")).unwrap();
            }
            if let Some(f) = freq {
                std::fs::write(cpu.join("cpufreq/cpuinfo_max_freq"), format!("{f}\n")).unwrap();
            }
        }
        // Entries that are not CPUs are ignored.
        std::fs::create_dir_all(dir.path().join("cpufreq")).unwrap();
        std::fs::write(dir.path().join("online"), "0-7\n").unwrap();
        dir
    }

    #[test]
    fn big_cores_of_phone_shaped_cpus() {
        // Snapdragon 8 Gen 3-like: 1 × X4 (1024), 5 × A720 (~870), 2 × A520 (~380).
        let sd = tree(&[
            (0, Some(381), None),
            (1, Some(381), None),
            (2, Some(870), None),
            (3, Some(870), None),
            (4, Some(870), None),
            (5, Some(870), None),
            (6, Some(870), None),
            (7, Some(1024), None),
        ]);
        assert_eq!(big_cores(sd.path()), Some(vec![2, 3, 4, 5, 6, 7]));
        // No cpu_capacity (older kernels): the maximum frequencies decide; 4 + 4 in kHz.
        let freq = tree(&[
            (0, None, Some(1_800_000)),
            (1, None, Some(1_800_000)),
            (2, None, Some(1_800_000)),
            (3, None, Some(1_800_000)),
            (4, None, Some(2_850_000)),
            (5, None, Some(2_850_000)),
            (6, None, Some(2_850_000)),
            (7, None, Some(3_300_000)),
        ]);
        // 1.8 GHz is more than half of 3.3 GHz: every core counts as big, so nothing is
        // pinned (frequency alone cannot tell an A55 at 1.8 GHz from a fast core).
        assert_eq!(big_cores(freq.path()), None);
        let little = tree(&[
            (0, None, Some(1_000_000)),
            (1, None, Some(1_000_000)),
            (2, None, Some(2_400_000)),
            (3, None, Some(2_400_000)),
        ]);
        assert_eq!(big_cores(little.path()), Some(vec![2, 3]));
        // Alike cores, unreadable or absent capacities: leave the machine alone.
        let alike = tree(&[(0, Some(1024), None), (1, Some(1024), None)]);
        assert_eq!(big_cores(alike.path()), None);
        let none = tree(&[(0, None, None), (1, None, None)]);
        assert_eq!(big_cores(none.path()), None);
        assert_eq!(big_cores(Path::new("/nonexistent/sys/cpu")), None);
    }

    #[test]
    fn hostile_sysfs_values_are_ignored() {
        let dir = tree(&[(0, Some(1024), None), (1, Some(300), None), (2, None, None)]);
        std::fs::write(dir.path().join("cpu2/cpu_capacity"), "9".repeat(10_000)).unwrap();
        std::fs::create_dir_all(dir.path().join("cpu99999")).unwrap();
        std::fs::write(dir.path().join("cpu99999/cpu_capacity"), "1024").unwrap();
        assert_eq!(big_cores(dir.path()), Some(vec![0]));
    }

    #[test]
    fn explicit_core_lists_are_checked() {
        assert_eq!("auto".parse::<CpuCores>().unwrap(), CpuCores::Auto);
        assert_eq!("all".parse::<CpuCores>().unwrap(), CpuCores::All);
        assert_eq!(
            "4-6,0".parse::<CpuCores>().unwrap(),
            CpuCores::Only(vec![4, 5, 6, 0])
        );
        for bad in ["", "x", "3-1", "1-", "0-99999999", "1,,2"] {
            assert!(bad.parse::<CpuCores>().is_err(), "{bad}");
        }
        let ours = current_thread_cores().unwrap_or(vec![0]);
        let (a, b) = (ours[0], *ours.last().unwrap());
        assert_eq!(
            resolve(&CpuCores::Only(vec![b, a, b])).unwrap(),
            Some(if a == b { vec![a] } else { vec![a, b] })
        );
        assert_eq!(resolve(&CpuCores::All).unwrap(), None);
        assert!(resolve(&CpuCores::Only(vec![])).is_err());
        assert!(resolve(&CpuCores::Only(vec![MAX_CPUS])).is_err());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let allowed = current_thread_cores().expect("affinity readable");
            let absent = (0..MAX_CPUS)
                .find(|c| !allowed.contains(c))
                .expect("a core not ours");
            assert!(resolve(&CpuCores::Only(vec![allowed[0], absent])).is_err());
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn pinning_restricts_the_thread() {
        let before = current_thread_cores().expect("affinity readable");
        let first = before[0];
        std::thread::spawn(move || {
            pin_current_thread(&[first]).expect("pin");
            assert_eq!(current_thread_cores(), Some(vec![first]));
        })
        .join()
        .unwrap();
        assert_eq!(
            current_thread_cores(),
            Some(before),
            "only the pinned thread changes"
        );
    }
}
