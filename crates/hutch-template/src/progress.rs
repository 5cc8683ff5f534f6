//! Progress reports, and turning debootstrap's output into them.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

/// One progress report of a template build, for the server to draw.
///
/// `phase` is one of `wait` (another process is building the same template),
/// `prepare`, `resolve` (package indices), `download`, `extract`, `install`
/// (dpkg unpack and configure), `configure` (hutch's own setup, in the build jail),
/// `shift` (re-owning files for the sandbox user namespace), `finalize` and
/// `done`. Within a phase `done` counts up to `total`; `done <= total` always
/// holds, but `total` may grow while a phase runs because some totals are
/// estimates until debootstrap reveals the real number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Name of the template (recipe) being built.
    pub template: String,
    /// The build phase, see the type's documentation.
    pub phase: String,
    /// Steps finished within the phase.
    pub done: u64,
    /// Steps in the phase (at least `done`, at least 1).
    pub total: u64,
    /// Human readable detail, e.g. `downloading libc6 2.36-9+deb12u4`.
    pub message: String,
}

impl Progress {
    /// A report with `done` clamped to `total` and `total` at least 1, so
    /// that consumers can divide without checking.
    pub(crate) fn new(template: &str, phase: &str, done: u64, total: u64, message: String) -> Self {
        let total = total.max(done).max(1);
        Progress {
            template: template.to_string(),
            phase: phase.to_string(),
            done: done.min(total),
            total,
            message,
        }
    }
}

/// Number of packages debootstrap fetches for the built-in recipes (minbase
/// plus [`crate::recipe::BASE_PACKAGES`] on bookworm: 151). Only used as the
/// download total until the real count is known; it grows if exceeded.
pub(crate) const DOWNLOAD_ESTIMATE: u64 = 151;

/// Share of the required set among downloaded packages, used to estimate
/// the extract total if debootstrap's own list cannot be read.
const REQUIRED_SHARE_PERCENT: u64 = 60;

/// Steps of the `resolve` phase: Release, signature, Packages, its check,
/// resolving required, resolving base, checking the component.
const RESOLVE_STEPS: u64 = 7;

/// One line of debootstrap output, classified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// `I: Retrieving <pkg> <version>`: a .deb is being downloaded.
    Retrieving { package: &'a str, version: &'a str },
    /// `I: Validating <pkg> <version>`: a (possibly cached) .deb is checked.
    Validating { package: &'a str, version: &'a str },
    /// A step of fetching and checking the archive indices.
    Index(&'a str),
    /// `I: Resolving dependencies of ...`.
    Resolving(&'a str),
    /// `I: Chosen extractor ...`: downloads are over, extraction begins.
    ChosenExtractor,
    /// `I: Extracting <pkg>...`.
    Extracting { package: &'a str },
    /// `I: Installing core packages...` and the unpack/configure stage
    /// headers such as `I: Unpacking required packages...`.
    InstallStage(&'a str),
    /// `I: Unpacking <pkg>...`.
    Unpacking { package: &'a str },
    /// `I: Configuring <pkg>...`.
    Configuring { package: &'a str },
    /// `I: Base system installed successfully.`
    Success,
    /// `W: ...`.
    Warning(&'a str),
    /// `E: ...`.
    Error(&'a str),
    /// Any other `I: ...` line.
    Info(&'a str),
    /// Everything else (wget, dpkg chatter).
    Other(&'a str),
}

/// Classifies one line of debootstrap output.
pub(crate) fn parse_line<'a>(line: &'a str) -> Line<'a> {
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("W: ") {
        return Line::Warning(rest);
    }
    if let Some(rest) = line.strip_prefix("E: ") {
        return Line::Error(rest);
    }
    let Some(msg) = line.strip_prefix("I: ") else {
        return Line::Other(line);
    };
    let msg = msg.trim();

    // Package-level lines carry exactly one package token (plus a version
    // for downloads); index downloads ("Retrieving InRelease") carry one
    // token and no version, stage headers carry several words.
    let two_tokens = |rest: &'a str| -> Option<(&'a str, &'a str)> {
        let mut it = rest.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) => Some((a, b)),
            _ => None,
        }
    };
    let single_pkg = |rest: &'a str| -> Option<&'a str> {
        let pkg = rest.strip_suffix("...")?;
        (!pkg.is_empty() && !pkg.contains(char::is_whitespace)).then_some(pkg)
    };

    if let Some(rest) = msg.strip_prefix("Retrieving ") {
        return match two_tokens(rest) {
            Some((package, version)) => Line::Retrieving { package, version },
            None => Line::Index(msg),
        };
    }
    if let Some(rest) = msg.strip_prefix("Validating ") {
        return match two_tokens(rest) {
            Some((package, version)) => Line::Validating { package, version },
            None => Line::Index(msg),
        };
    }
    if msg.starts_with("Checking Release signature") || msg.starts_with("Valid Release signature") {
        return Line::Index(msg);
    }
    if msg.starts_with("Resolving dependencies") || msg.starts_with("Checking component") {
        return Line::Resolving(msg);
    }
    if msg.starts_with("Chosen extractor") {
        return Line::ChosenExtractor;
    }
    if let Some(package) = msg.strip_prefix("Extracting ").and_then(single_pkg) {
        return Line::Extracting { package };
    }
    if let Some(package) = msg.strip_prefix("Unpacking ").and_then(single_pkg) {
        return Line::Unpacking { package };
    }
    if let Some(package) = msg.strip_prefix("Configuring ").and_then(single_pkg) {
        return Line::Configuring { package };
    }
    if msg.starts_with("Installing core packages")
        || msg.starts_with("Unpacking ")
        || msg.starts_with("Configuring ")
    {
        return Line::InstallStage(msg);
    }
    if msg.starts_with("Base system installed successfully") {
        return Line::Success;
    }
    Line::Info(msg)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Resolve,
    Download,
    Extract,
    Install,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Download => "download",
            Phase::Extract => "extract",
            Phase::Install => "install",
        }
    }
}

/// Turns a stream of debootstrap lines into [`Progress`] reports.
pub(crate) struct DebootstrapTracker {
    template: String,
    /// debootstrap's target directory; after downloading it writes the exact
    /// package lists to `<target>/debootstrap/{required,base}`, which give
    /// exact totals for the later phases. `None` in tests.
    target: Option<PathBuf>,
    phase: Phase,
    resolve_done: u64,
    downloaded: HashSet<String>,
    download_total: u64,
    extracted: u64,
    extract_total: u64,
    installed: u64,
    install_total: u64,
    /// debootstrap said it succeeded: every total is final.
    succeeded: bool,
}

impl DebootstrapTracker {
    /// A tracker for a build of `template` into `target`.
    pub fn new(template: &str, target: Option<PathBuf>) -> Self {
        DebootstrapTracker {
            template: template.to_string(),
            target,
            phase: Phase::Resolve,
            resolve_done: 0,
            downloaded: HashSet::new(),
            download_total: DOWNLOAD_ESTIMATE,
            extracted: 0,
            extract_total: 0,
            installed: 0,
            install_total: 0,
            succeeded: false,
        }
    }

    /// Feeds one output line; returns the reports it causes (none for
    /// noise, two when a phase ends and the next begins).
    pub fn on_line(&mut self, raw: &str) -> Vec<Progress> {
        let mut out = Vec::new();
        match parse_line(raw) {
            Line::Index(msg) | Line::Resolving(msg) => {
                if self.phase == Phase::Resolve {
                    self.resolve_done = (self.resolve_done + 1).min(RESOLVE_STEPS - 1);
                }
                out.push(self.report(Phase::Resolve, msg.to_string()));
            }
            Line::Retrieving { package, version } => {
                self.on_download(
                    package,
                    format!("downloading {package} {version}"),
                    &mut out,
                );
            }
            Line::Validating { package, version } => {
                self.on_download(package, format!("checking {package} {version}"), &mut out);
            }
            Line::ChosenExtractor => {
                self.enter(Phase::Extract, &mut out);
            }
            Line::Extracting { package } => {
                self.enter(Phase::Extract, &mut out);
                self.extracted += 1;
                out.push(self.report(Phase::Extract, format!("extracting {package}")));
            }
            Line::InstallStage(msg) => {
                self.enter(Phase::Install, &mut out);
                out.push(self.report(Phase::Install, lower_first(msg)));
            }
            Line::Unpacking { package } => {
                self.enter(Phase::Install, &mut out);
                self.installed += 1;
                out.push(self.report(Phase::Install, format!("unpacking {package}")));
            }
            Line::Configuring { package } => {
                self.enter(Phase::Install, &mut out);
                self.installed += 1;
                out.push(self.report(Phase::Install, format!("configuring {package}")));
            }
            Line::Success => {
                self.enter(Phase::Install, &mut out);
                self.succeeded = true;
                self.install_total = self.install_total.max(self.installed);
                self.installed = self.install_total;
                out.push(self.report(Phase::Install, "base system installed".to_string()));
            }
            Line::Warning(msg) => {
                out.push(self.report(self.phase, format!("warning: {msg}")));
            }
            Line::Error(msg) => {
                out.push(self.report(self.phase, format!("error: {msg}")));
            }
            Line::Info(msg) => {
                out.push(self.report(self.phase, msg.to_string()));
            }
            Line::Other(_) => {}
        }
        out
    }

    fn on_download(&mut self, package: &str, message: String, out: &mut Vec<Progress>) {
        self.enter(Phase::Download, out);
        self.downloaded.insert(package.to_string());
        out.push(self.report(Phase::Download, message));
    }

    /// Moves to `next` if it lies ahead, reporting the current phase as
    /// complete and fixing the totals that have become known.
    fn enter(&mut self, next: Phase, out: &mut Vec<Progress>) {
        if next <= self.phase {
            return;
        }
        let finished = self.phase;
        // A closed phase ends exactly full, whatever its estimate said.
        match finished {
            Phase::Resolve => self.resolve_done = RESOLVE_STEPS,
            Phase::Download => self.download_total = self.downloaded.len() as u64,
            Phase::Extract => {
                let n = self.extracted.max(self.extract_total);
                self.extracted = n;
                self.extract_total = n;
            }
            Phase::Install => {}
        }
        if finished < Phase::Extract && next >= Phase::Extract {
            self.learn_package_counts();
        }
        self.phase = next;
        out.push(self.report(finished, format!("{} finished", finished.name())));
    }

    /// Sets the extract and install totals, from debootstrap's saved package
    /// lists when readable, else from the download count.
    fn learn_package_counts(&mut self) {
        let count = |name: &str| -> Option<u64> {
            let path = self.target.as_ref()?.join("debootstrap").join(name);
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.split_whitespace().count() as u64)
        };
        let downloaded = self.downloaded.len() as u64;
        let (required, base) = match (count("required"), count("base")) {
            (Some(r), Some(b)) if r > 0 => (r, b),
            _ => {
                let r = downloaded * REQUIRED_SHARE_PERCENT / 100;
                (r, downloaded.saturating_sub(r))
            }
        };
        self.extract_total = required;
        // Every package is unpacked once and configured once.
        self.install_total = 2 * (required + base);
    }

    fn report(&mut self, phase: Phase, message: String) -> Progress {
        let (done, total) = match phase {
            Phase::Resolve => (self.resolve_done, RESOLVE_STEPS),
            Phase::Download => (self.downloaded.len() as u64, self.download_total),
            Phase::Extract => (self.extracted, self.extract_total),
            Phase::Install => (self.installed, self.install_total),
        };
        // Estimated totals must never read as "done" while work goes on:
        // keep one step of headroom until the phase is closed.
        let still_running = phase == self.phase && phase != Phase::Resolve && !self.succeeded;
        let total = if still_running && done >= total {
            done + 1
        } else {
            total
        };
        Progress::new(&self.template, phase.name(), done, total, message)
    }
}

fn lower_first(s: &str) -> String {
    let s = s.trim_end_matches("...");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debootstrap_lines() {
        assert_eq!(
            parse_line("I: Retrieving libc6 2.36-9+deb12u4"),
            Line::Retrieving {
                package: "libc6",
                version: "2.36-9+deb12u4"
            }
        );
        assert_eq!(
            parse_line("I: Validating libc6 2.36-9+deb12u4\n"),
            Line::Validating {
                package: "libc6",
                version: "2.36-9+deb12u4"
            }
        );
        // Index downloads print an empty version (note the trailing space).
        assert_eq!(
            parse_line("I: Retrieving InRelease "),
            Line::Index("Retrieving InRelease")
        );
        assert_eq!(
            parse_line("I: Validating Packages "),
            Line::Index("Validating Packages")
        );
        assert_eq!(
            parse_line("I: Resolving dependencies of base packages..."),
            Line::Resolving("Resolving dependencies of base packages...")
        );
        assert_eq!(
            parse_line("I: Chosen extractor for .deb packages: dpkg-deb"),
            Line::ChosenExtractor
        );
        assert_eq!(
            parse_line("I: Extracting libacl1..."),
            Line::Extracting { package: "libacl1" }
        );
        assert_eq!(
            parse_line("I: Unpacking required packages..."),
            Line::InstallStage("Unpacking required packages...")
        );
        assert_eq!(
            parse_line("I: Unpacking the base system..."),
            Line::InstallStage("Unpacking the base system...")
        );
        assert_eq!(
            parse_line("I: Unpacking python3.11-minimal..."),
            Line::Unpacking {
                package: "python3.11-minimal"
            }
        );
        assert_eq!(
            parse_line("I: Configuring libc-bin..."),
            Line::Configuring {
                package: "libc-bin"
            }
        );
        assert_eq!(
            parse_line("I: Configuring the base system..."),
            Line::InstallStage("Configuring the base system...")
        );
        assert_eq!(
            parse_line("I: Base system installed successfully."),
            Line::Success
        );
        assert_eq!(
            parse_line("W: Failure trying to run: chroot x"),
            Line::Warning("Failure trying to run: chroot x")
        );
        assert_eq!(
            parse_line("E: Couldn't find these debs: nope"),
            Line::Error("Couldn't find these debs: nope")
        );
        assert_eq!(
            parse_line("I: Target architecture can be executed"),
            Line::Info("Target architecture can be executed")
        );
        assert_eq!(
            parse_line("dpkg: warning: blah"),
            Line::Other("dpkg: warning: blah")
        );
    }

    /// A shortened but faithful debootstrap transcript.
    const TRANSCRIPT: &str = "\
I: Target architecture can be executed
I: Retrieving InRelease 
I: Checking Release signature
I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)
I: Retrieving Packages 
I: Validating Packages 
I: Resolving dependencies of required packages...
I: Resolving dependencies of base packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
I: Validating bash 5.2.15-2+b7
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting bash...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Unpacking bash...
I: Configuring required packages...
I: Configuring adduser...
I: Configuring bash...
I: Unpacking the base system...
I: Unpacking apt...
I: Configuring the base system...
I: Configuring apt...
I: Base system installed successfully.
";

    #[test]
    fn tracker_reports_monotonic_bounded_progress() {
        let mut t = DebootstrapTracker::new("base", None);
        let reports: Vec<Progress> = TRANSCRIPT.lines().flat_map(|l| t.on_line(l)).collect();
        assert!(!reports.is_empty());
        for r in &reports {
            assert!(r.done <= r.total, "{r:?}");
            assert!(r.total >= 1, "{r:?}");
            assert_eq!(r.template, "base");
        }
        // Phases appear in order and never go back.
        let order = ["resolve", "download", "extract", "install"];
        let idx: Vec<usize> = reports
            .iter()
            .map(|r| {
                order
                    .iter()
                    .position(|p| *p == r.phase)
                    .expect("known phase")
            })
            .collect();
        assert!(idx.windows(2).all(|w| w[0] <= w[1]), "{idx:?}");

        // Each phase is reported complete exactly when it ends.
        let last_of = |phase: &str| {
            reports
                .iter()
                .rev()
                .find(|r| r.phase == phase)
                .cloned()
                .expect("phase reported")
        };
        let dl = last_of("download");
        assert_eq!((dl.done, dl.total), (3, 3), "{dl:?}");
        let ex = last_of("extract");
        assert_eq!(ex.done, ex.total, "{ex:?}");
        let inst = last_of("install");
        assert_eq!(inst.done, inst.total, "{inst:?}");
        assert_eq!(inst.message, "base system installed");

        // While downloading, the estimate is the total.
        let first_dl = reports.iter().find(|r| r.phase == "download").expect("dl");
        assert_eq!(first_dl.total, DOWNLOAD_ESTIMATE);
        assert_eq!(first_dl.message, "downloading adduser 3.134");
    }

    #[test]
    fn tracker_reads_exact_counts_from_target() {
        let dir = crate::testutil::TempDir::new("tracker");
        let db = dir.path().join("debootstrap");
        std::fs::create_dir_all(&db).expect("mkdir");
        std::fs::write(db.join("required"), "adduser bash").expect("write");
        std::fs::write(db.join("base"), "apt\n").expect("write");
        let mut t = DebootstrapTracker::new("base", Some(dir.path().to_path_buf()));
        let reports: Vec<Progress> = TRANSCRIPT.lines().flat_map(|l| t.on_line(l)).collect();
        let ex = reports
            .iter()
            .find(|r| r.phase == "extract" && r.message == "extracting adduser")
            .expect("extract report");
        assert_eq!((ex.done, ex.total), (1, 2));
        let inst = reports
            .iter()
            .find(|r| r.phase == "install" && r.message == "unpacking adduser")
            .expect("install report");
        assert_eq!((inst.done, inst.total), (1, 6));
    }

    #[test]
    fn download_total_grows_past_estimate() {
        let mut t = DebootstrapTracker::new("x", None);
        let mut last = None;
        for i in 0..(DOWNLOAD_ESTIMATE + 20) {
            last = t.on_line(&format!("I: Retrieving pkg{i} 1.0")).pop();
        }
        let last = last.expect("report");
        assert_eq!(last.done, DOWNLOAD_ESTIMATE + 20);
        assert!(last.total > last.done);
    }
}
