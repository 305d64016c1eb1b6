//! Dated log files for every program, plus stderr.
//!
//! Each run of a program writes `<Program><YYYYMMDD-HHMMSS>.log` (`DMInstaller20261124-132001.log`)
//! in the device's log folder; a second run in the same second gets `-2`, `-3`…. When a file
//! passes its size limit the writer starts a new dated file at the next line. Retention keeps
//! the newest N files per program. If the log folder cannot be written the program still logs
//! to stderr and says why.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::LevelFilter;

use crate::clock::{self, Clock};
use crate::error::Result;
use crate::fs as dmfs;

/// The programs that write logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `dminstaller`.
    Installer,
    /// `dmclientsetup`.
    ClientSetup,
    /// `dmsvc`.
    Agent,
    /// `dmcertenroll`.
    CertEnroll,
    /// `dmmp`.
    ManagementPoint,
    /// `dmtether`, on a desktop.
    Tether,
}

impl Program {
    /// The log file prefix, as the source documents name it.
    pub fn log_prefix(self) -> &'static str {
        match self {
            Program::Installer => "DMInstaller",
            Program::ClientSetup => "DMClientSetup",
            Program::Agent => "DMSvc",
            Program::CertEnroll => "DMCertEnroll",
            Program::ManagementPoint => "DMMP",
            Program::Tether => "DMTether",
        }
    }
}

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The log folder (created when missing).
    pub dir: PathBuf,
    /// Level for the file and stderr.
    pub level: LevelFilter,
    /// Files kept per program.
    pub retention: usize,
    /// Bytes before a new file is started; 0 never starts one.
    pub max_size: u64,
}

/// The name of a log file: `DMSvc20261124-132001.log`, or `DMSvc20261124-132001-2.log` for
/// the second one started in the same second.
pub fn log_file_name(program: Program, stamp: &str, seq: u32) -> String {
    if seq <= 1 {
        format!("{}{stamp}.log", program.log_prefix())
    } else {
        format!("{}{stamp}-{seq}.log", program.log_prefix())
    }
}

/// The (timestamp, sequence) of a log file name of `program`, or `None` for other files.
pub fn parse_log_file_name(program: Program, name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(program.log_prefix())?.strip_suffix(".log")?;
    let (stamp, seq) = match rest.get(15..) {
        Some("") => (rest, 1),
        Some(tail) => (rest.get(..15)?, tail.strip_prefix('-')?.parse().ok().filter(|n| *n >= 2)?),
        None => return None,
    };
    let b = stamp.as_bytes();
    let shape = b.len() == 15
        && b[8] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit());
    shape.then(|| (stamp.to_string(), seq))
}

/// The log files of `program` in `dir`, oldest first.
pub fn list_log_files(dir: &Path, program: Program) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<((String, u32), PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((parse_log_file_name(program, &name)?, e.path()))
        })
        .collect();
    found.sort_unstable();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Deletes all but the newest `keep` log files of `program`. Returns what it removed.
pub fn apply_retention(dir: &Path, program: Program, keep: usize) -> Result<Vec<PathBuf>> {
    let files = list_log_files(dir, program);
    let excess = files.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for p in files.into_iter().take(excess) {
        dmfs::remove_file(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

/// Creates the next dated log file of `program` in `dir`.
fn create_log_file(dir: &Path, program: Program, clock: &dyn Clock) -> Result<(File, PathBuf)> {
    dmfs::create_dir_all(dir, dmfs::MODE_DIR)?;
    let stamp = clock::compact(clock.now());
    let mut seq = 1;
    loop {
        let path = dir.join(log_file_name(program, &stamp, seq));
        match dmfs::create_new_append(&path, dmfs::MODE_LOG) {
            Ok(f) => return Ok((f, path)),
            Err(crate::Error::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists && seq < 1000 =>
            {
                seq += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A log file writer that starts a new dated file when the current one is full.
#[derive(Debug)]
pub struct DatedLogWriter {
    program: Program,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    file: File,
    path: PathBuf,
    written: u64,
    at_line_start: bool,
}

impl DatedLogWriter {
    /// Opens the first file and applies retention.
    pub fn open(program: Program, config: LogConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let (file, path) = create_log_file(&config.dir, program, clock.as_ref())?;
        apply_retention(&config.dir, program, config.retention)?;
        Ok(DatedLogWriter { program, config, clock, file, path, written: 0, at_line_start: true })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotate(&mut self) -> io::Result<()> {
        let (file, path) = create_log_file(&self.config.dir, self.program, self.clock.as_ref())
            .map_err(io::Error::other)?;
        let _ = self.file.sync_all();
        self.file = file;
        self.path = path;
        self.written = 0;
        let _ = apply_retention(&self.config.dir, self.program, self.config.retention);
        Ok(())
    }
}

impl Write for DatedLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Only start a new file between lines, so a line is never split across files.
        if self.config.max_size > 0 && self.at_line_start && self.written >= self.config.max_size {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The log file of this run and whether logging to a file works.
#[derive(Debug, Clone)]
pub struct LogHandle {
    /// The first log file of this run, when the log folder was writable.
    pub path: Option<PathBuf>,
}

/// The process's logger: each line (`2026-11-24T13:20:01.123456789Z [INFO] message`) to
/// stderr and, when the log folder was writable, to the run's dated file.
struct Logger {
    level: LevelFilter,
    file: Option<Mutex<DatedLogWriter>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now();
        let line =
            format!("{} [{}] {}\n", clock::rfc3339_nanos(now), record.level(), record.args());
        let _ = io::stderr().lock().write_all(line.as_bytes());
        if let Some(file) = &self.file {
            let _ = file.lock().unwrap_or_else(|p| p.into_inner()).write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Some(file) = &self.file {
            let _ = file.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
    }
}

impl Logger {
    /// Makes this the process's logger, unless one already is.
    fn install(self) {
        let level = self.level;
        if log::set_boxed_logger(Box::new(self)).is_ok() {
            log::set_max_level(level);
        }
    }
}

/// Starts logging for this process: a dated file in `config.dir` and stderr. Can only take
/// effect once per process; later calls still create the file but log only through the first
/// logger. If the file cannot be created, logs go to stderr with a warning saying why.
pub fn init(program: Program, config: LogConfig, clock: Arc<dyn Clock>) -> LogHandle {
    let level = config.level;
    let (file, path, problem) = match DatedLogWriter::open(program, config, clock) {
        Ok(w) => {
            let path = w.path().to_path_buf();
            (Some(Mutex::new(w)), Some(path), None)
        }
        Err(e) => (None, None, Some(e)),
    };
    Logger { level, file }.install();
    if let Some(e) = problem {
        log::warn!("logging to stderr only: {e}");
    }
    LogHandle { path }
}

/// Starts logging to stderr alone, at `level` (the management point's commands and server).
pub fn init_stderr(level: LevelFilter) {
    Logger { level, file: None }.install();
}

/// Starts logging for a device program: the device's log folder, with the verbosity,
/// retention and size limit from the device's settings (defaults when it has none, or they
/// cannot be read: logging must work on a damaged client too). `verbose` forces debug lines.
pub fn init_device(
    program: Program,
    layout: &crate::DeviceLayout,
    clock: Arc<dyn Clock>,
    verbose: bool,
) -> LogHandle {
    let settings =
        crate::fs::read_optional(&layout.settings_file(), crate::settings::MAX_SETTINGS_BYTES)
            .ok()
            .flatten()
            .and_then(|b| crate::Settings::parse(&layout.settings_file(), &b).ok())
            .map(|(s, _)| s)
            .unwrap_or_else(crate::Settings::defaults);
    let ui = &settings.user_interface;
    let config = LogConfig {
        dir: layout.log_dir(),
        level: if verbose { LevelFilter::Debug } else { settings.log_level() },
        retention: ui.log_retention,
        max_size: ui.log_max_size_kib * 1024,
    };
    init(program, config, clock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use std::time::Duration;

    fn config(dir: &Path, retention: usize, max_size: u64) -> LogConfig {
        LogConfig { dir: dir.to_path_buf(), level: LevelFilter::Info, retention, max_size }
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(
            log_file_name(Program::Installer, "20261124-132001", 1),
            "DMInstaller20261124-132001.log"
        );
        assert_eq!(
            log_file_name(Program::Agent, "20261124-132001", 3),
            "DMSvc20261124-132001-3.log"
        );
        assert_eq!(
            parse_log_file_name(Program::Agent, "DMSvc20261124-132001-3.log"),
            Some(("20261124-132001".into(), 3))
        );
        assert_eq!(
            parse_log_file_name(Program::Agent, "DMSvc20261124-132001.log"),
            Some(("20261124-132001".into(), 1))
        );
        for other in [
            "DMSvc.log",
            "DMSvc20261124-132001-1.log",
            "DMSvc2026112x-132001.log",
            "DMInstaller20261124-132001.log",
            "DMSvc20261124-132001.log.gz",
        ] {
            assert_eq!(parse_log_file_name(Program::Agent, other), None, "{other}");
        }
    }

    #[test]
    fn same_second_runs_get_distinct_files_and_retention_keeps_newest() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(FixedClock::at_unix(1_795_526_401));
        let mut paths = Vec::new();
        for i in 0..3 {
            if i == 1 {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&paths[0]).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o640, "logs are not world-readable");
            }
            paths.push(
                DatedLogWriter::open(Program::ClientSetup, config(dir.path(), 2, 0), clock.clone())
                    .unwrap()
                    .path()
                    .to_path_buf(),
            );
        }
        let names: Vec<_> =
            paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [
                "DMClientSetup20261124-132001.log",
                "DMClientSetup20261124-132001-2.log",
                "DMClientSetup20261124-132001-3.log"
            ]
        );
        // Retention 2: the oldest is gone, the two newest stay; other programs' logs untouched.
        std::fs::write(dir.path().join("DMInstaller20200101-000000.log"), b"x").unwrap();
        let left = list_log_files(dir.path(), Program::ClientSetup);
        assert_eq!(left, paths[1..].to_vec());
        assert!(dir.path().join("DMInstaller20200101-000000.log").exists());
    }

    #[test]
    fn rotates_at_line_boundaries_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FixedClock::at_unix(1_795_526_401));
        let mut w = DatedLogWriter::open(Program::Agent, config(dir.path(), 3, 100), clock.clone())
            .unwrap();
        for i in 0..20 {
            clock.advance(Duration::from_secs(1));
            // A line written in pieces, as the logger does.
            write!(w, "line {i:02} ").unwrap();
            writeln!(w, "{}", "x".repeat(30)).unwrap();
        }
        let files = list_log_files(dir.path(), Program::Agent);
        assert_eq!(files.len(), 3, "{files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.ends_with('\n'));
            assert!(text.lines().all(|l| l.starts_with("line ") && l.len() == 38), "{text}");
            assert!(text.len() <= 100 + 38);
        }
        let last = std::fs::read_to_string(files.last().unwrap()).unwrap();
        assert!(last.contains("line 19"));
    }

    #[test]
    fn unwritable_log_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("log"), b"a file, not a folder").unwrap();
        let err = DatedLogWriter::open(
            Program::Installer,
            config(&dir.path().join("log/dm"), 3, 0),
            Arc::new(FixedClock::at_unix(0)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("log"), "{err}");
    }
}
