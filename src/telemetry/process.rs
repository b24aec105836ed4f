//! The process's own resource use under the names every Prometheus client
//! library exports (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), and `triage_build_info`.
//!
//! Read from `/proc/self` when `/metrics` is scraped, so the figures are as
//! fresh as the scrape and nothing runs in between. They are written as
//! Prometheus text beside the recorder's output rather than through the
//! `metrics` crate, whose counters hold integers: CPU seconds are a
//! fractional counter. A figure that cannot be read (another OS, a
//! restricted `/proc`) is left out, never reported as zero.

use std::fmt::Write as _;

/// `triage_build_info`: 1, labelled with the version.
pub const BUILD_INFO: &str = "triage_build_info";

/// The kernel reports CPU times and start times in clock ticks of
/// `USER_HZ`, which Linux fixes at 100 for user space on every
/// architecture (the Prometheus Go client's procfs assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

/// The figures of one scrape; `None` where `/proc` did not say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

// === impl Sample ===

impl Sample {
    /// Reads the calling process's figures.
    pub fn read() -> Sample {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| Stat::parse(&text));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text));
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|text| resident_bytes(&text));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Sample {
            cpu_seconds: stat
                .as_ref()
                .map(|stat| (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND),
            resident_bytes,
            virtual_bytes: stat.as_ref().map(|stat| stat.vsize),
            open_fds,
            max_fds,
            start_time_seconds: stat
                .as_ref()
                .zip(boot_time)
                .map(|(stat, boot)| boot as f64 + stat.starttime as f64 / TICKS_PER_SECOND),
        }
    }

    /// Appends the figures in the Prometheus text format.
    pub fn write(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(value) = value {
                // Writing to a String cannot fail.
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(|value| value.to_string()),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|value| value.to_string()),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|value| value.to_string()),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|value| value.to_string()),
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|value| value.to_string()),
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.map(|value| value.to_string()),
        );
    }
}

/// Appends `triage_build_info{version="..."} 1`, and a `commit` label when
/// the build was given one (`TRIAGE_GIT_COMMIT` at compile time, e.g. by an
/// image build).
pub fn write_build_info(out: &mut String) {
    let version = env!("CARGO_PKG_VERSION");
    let commit = option_env!("TRIAGE_GIT_COMMIT")
        .filter(|commit| !commit.is_empty())
        .map(|commit| format!(",commit=\"{}\"", escape(commit)))
        .unwrap_or_default();
    let _ = write!(
        out,
        "# HELP {BUILD_INFO} The version triage was built from; always 1.\n\
         # TYPE {BUILD_INFO} gauge\n\
         {BUILD_INFO}{{version=\"{}\"{commit}}} 1\n",
        escape(version)
    );
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in ticks.
    utime: u64,
    stime: u64,
    /// Start time after boot, in ticks.
    starttime: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
}

// === impl Stat ===

impl Stat {
    /// Parses `/proc/[pid]/stat` (proc(5)). The command name, field 2, is in
    /// parentheses and may hold spaces and parentheses itself, so the fields
    /// are counted from the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (state), so field n is `fields[n - 3]`.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `btime` of `/proc/stat`: when the system booted, in Unix seconds.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status` (in kB there), in bytes.
fn resident_bytes(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a thread may be
        // named; fields 3.. as proc(5) lists them.
        let text = "4242 (tri (age) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 5000 18446744073709551615";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
            })
        );
        assert_eq!(Stat::parse("4242 (cut short) S 1 2"), None);
        assert_eq!(Stat::parse("no parenthesis"), None);
    }

    #[test]
    fn boot_time_and_resident_memory_are_read_from_their_lines() {
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1733011390\nprocesses 5\n"),
            Some(1733011390)
        );
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
        assert_eq!(
            resident_bytes("Name:\ttriage\nVmRSS:\t   20480 kB\nThreads:\t9\n"),
            Some(20480 * 1024)
        );
        assert_eq!(resident_bytes("Name:\ttriage\n"), None);
    }

    #[test]
    fn figures_not_read_are_left_out() {
        let mut out = String::new();
        Sample {
            cpu_seconds: Some(1.5),
            open_fds: Some(12),
            ..Sample::default()
        }
        .write(&mut out);
        assert_eq!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 1.5\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\n\
             process_open_fds 12\n"
        );
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let mut out = String::new();
        write_build_info(&mut out);
        let sample = out.lines().last().unwrap_or_default();
        assert!(
            sample.starts_with(&format!(
                "triage_build_info{{version=\"{}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{out}"
        );
        assert!(sample.ends_with("} 1"), "{out}");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_measured_on_linux() {
        let sample = Sample::read();
        assert!(sample.cpu_seconds.is_some_and(|seconds| seconds >= 0.0));
        assert!(sample.resident_bytes.is_some_and(|bytes| bytes > 0));
        assert!(sample.open_fds.is_some_and(|fds| fds >= 3));
        assert!(sample.max_fds.is_some_and(|max| max >= 3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs_f64())
            .unwrap_or_default();
        assert!(
            sample
                .start_time_seconds
                .is_some_and(|start| start <= now + 1.0 && start > now - 86_400.0 * 365.0),
            "{sample:?}"
        );
    }
}
