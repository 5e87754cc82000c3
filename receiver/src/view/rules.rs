//! What one line of an installer log says, given which file it came from
//! and which program wrote it.
//!
//! Every rule names its evidence: a line of Anaconda's or lorax's source
//! (repository and path), or a log of the corpus (`ci/view/corpus-manifest`,
//! by case name). The README's rules table says the same.
//!
//! All anchors are looked for at once by one Aho-Corasick automaton, so a
//! log is read once whatever the number of rules; only a line holding an
//! anchor is judged.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

/// Which file a line comes from: decides which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `anaconda-tb-*`, Anaconda's crash dump: its arrival is the failure.
    CrashDump,
    /// `anaconda.log`: only Anaconda writes it.
    AnacondaLog,
    /// The installer's syslog or journal (`syslog`, `anaconda.syslog`,
    /// `journal.log`, `install.log.syslog`): every process on the machine
    /// writes there, so a line counts by the program that wrote it.
    Syslog,
    /// The installed system's first boot (`boot.log`, `messages`,
    /// `dmesg.log`, sent only by post_anamon's first-boot service): its
    /// arrival is the end; nothing in it is an install failure.
    FirstBoot,
    /// Any other installer log (program.log, storage.log, packaging.log,
    /// ks-script-*.log, X.log, install.log...).
    Other,
}

/// Anaconda's crash dumps are `/tmp/anaconda-tb-<random>`.
pub const CRASH_DUMP_PREFIX: &str = "anaconda-tb-";

/// Names only the first boot after an install sends.
pub const FIRST_BOOT_FILES: [&str; 3] = ["boot.log", "messages", "dmesg.log"];

/// What a file is, by its name (the name Anaconda gives it, or the name
/// `99-copy-logs.ks` copies it to under /var/log/anaconda).
pub fn source_of(file: &str) -> Source {
    if file.starts_with(CRASH_DUMP_PREFIX) {
        Source::CrashDump
    } else if FIRST_BOOT_FILES.contains(&file) {
        Source::FirstBoot
    } else if file == "anaconda.log" {
        Source::AnacondaLog
    } else if matches!(
        file,
        "syslog"
            | "anaconda.syslog"
            | "journal.log"
            | "anaconda.journal.log"
            | "install.log.syslog"
    ) {
        Source::Syslog
    } else {
        Source::Other
    }
}

/// What one line says about the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A failure; the text says which kind.
    Failure(&'static str),
    /// The installer reached its end; the text says how it said so.
    End(&'static str),
    /// The installer started its last step (the %post scripts, its last
    /// task, copying its logs): the end once the logs stop growing.
    LastStep(&'static str),
    /// The installer is at this stage.
    Stage(Stage),
    /// Installing package N of M.
    Package(u32, u32),
    /// `Reporting the IPMI event: 9` (IPMI_ABORTED). After an 8 it is only
    /// the text UI quitting (see [`judge_ipmi`]).
    Aborted,
    /// "Thread Done: AnaInstallThread".
    InstallDone,
    /// "Running Thread: AnaConfigurationThread" (RHEL 7: after the install
    /// thread).
    ConfigStarted,
    /// "Thread Done: AnaConfigurationThread".
    ConfigDone,
}

/// Where an install is, as its logs say. Ordered as an install goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Pre,
    Storage,
    Packages,
    Bootloader,
    Configuration,
    Post,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pre => "%pre",
            Stage::Storage => "storage",
            Stage::Packages => "packages",
            Stage::Bootloader => "boot loader",
            Stage::Configuration => "configuration",
            Stage::Post => "%post",
        }
    }

    /// The stage a task or queue of Anaconda's task queue belongs to, by
    /// its name (pyanaconda/modules/*: "Early storage configuration",
    /// "Create storage layout", "Install the payload", "Install
    /// bootloader", "Configure SELinux"...; corpus lmc-rocky91).
    fn of_task(name: &str) -> Option<Stage> {
        let n = name.to_ascii_lowercase();
        let has = |w: &str| n.contains(w);
        if has("pre-install") || has("%pre") {
            None // %pre-install runs between storage and packages
        } else if has("post installation scripts") || has("%post") {
            Some(Stage::Post)
        } else if has("bootloader") || has("boot loader") || has("zipl") {
            Some(Stage::Bootloader)
        } else if has("storage") || has("filesystem") || has("partition") {
            Some(Stage::Storage)
        } else if has("payload") || has("packages") || has("install the system") {
            Some(Stage::Packages)
        } else if has("configur") || has("initramfs") || has("user") || has("kickstart") {
            Some(Stage::Configuration)
        } else {
            None
        }
    }

    /// The stage a step of the dispatcher (RHEL 5 and 6) does its work in
    /// (dispatch.py installSteps).
    fn of_step(name: &str) -> Option<Stage> {
        match name {
            "enablefilesystems" | "autopartitionexecute" => Some(Stage::Storage),
            "installpackages" => Some(Stage::Packages),
            "instbootloader" => Some(Stage::Bootloader),
            "writeconfig" | "firstboot" | "writeksconfig" | "setfilecon" => {
                Some(Stage::Configuration)
            }
            "postscripts" => Some(Stage::Post),
            _ => None,
        }
    }
}

/// What an anchor stands for.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A failure wherever it is (an installer log, not the first boot).
    Failure(&'static str),
    /// A Python traceback: a failure only where Anaconda itself raised it.
    Traceback,
    /// `Reporting the IPMI event: N`.
    Ipmi,
    /// lorax `packaging: base repo (?!\(CDROM/file).* not valid`.
    BaseRepo,
    /// lorax `packaging: .* requires .*`.
    Requires,
    /// lorax `Process [0-9]+ \(anaconda\) of user [0-9]+ dumped core`.
    DumpedCore,
    /// Anaconda's `Error code N running the kickstart script at line N`.
    KickstartScript,
    /// The kernel's `Oops: `: a failure when the oops header follows (its
    /// error code, or `[#N]`), not in another program's sentence.
    Oops,
    /// `general protection fault`: the kernel's oops, not a program that
    /// the kernel reports crashed (`traps: NAME[PID] general protection
    /// fault ip:...`), which the install survives.
    ProtectionFault,
    /// The task queue (Anaconda 29 to 44): `Task started: NAME (N/M)`.
    Task,
    /// The dispatcher (Anaconda 11 to 18, RHEL 5 and 6):
    /// `moving (1) to step NAME`.
    Step,
    End(&'static str),
    LastStep(&'static str),
    /// `Queue started: NAME (N)` of the task queue.
    Queue,
    /// `Installing NAME (N/M)`: a package.
    Installing,
    /// debian-installer's main-menu: `Menu item 'NAME' selected|failed`.
    MenuItem,
    Stage(Stage),
    InstallDone,
    ConfigStarted,
    ConfigDone,
}

/// Every anchor, with what it stands for and its evidence.
const RULES: [(&str, Rule); 31] = [
    // lorax src/pylorax/monitor.py LogMonitor.simple_tests, and Anaconda's
    // crash: pyanaconda/exception.py writes anaconda-tb-* with it.
    ("Traceback (", Rule::Traceback),
    // Anaconda pyanaconda/kickstart.py runTracebackScripts (only on a crash);
    // lorax monitor.py.
    (
        "traceback script(s) have been run",
        Rule::Failure("Anaconda ran its traceback scripts"),
    ),
    // The kernel's OOM killer (mm/oom_kill.c: "Out of memory: Kill process"
    // to 4.x, "Killed process" since); lorax monitor.py "Out of memory:".
    (
        "Out of memory: Kill",
        Rule::Failure("the kernel ran out of memory"),
    ),
    // The kernel's panic() and oops: an install does not survive them. A
    // bare "Call Trace:" is not here: the kernel prints one under every
    // WARNING (corpus el6-knewhow: "WARNING: at ... mark_hardware_unsupported"
    // then "Call Trace:" then "---[ end trace ... ]---" on a completed
    // CentOS 6.5 install); the header line before it says which it is.
    (
        "Kernel panic - not syncing",
        Rule::Failure("the kernel panicked"),
    ),
    (
        "BUG: unable to handle",
        Rule::Failure("the kernel oopsed (bad memory access)"),
    ),
    ("Oops: ", Rule::Oops),
    ("general protection fault", Rule::ProtectionFault),
    // lorax monitor.py (Anaconda's packaging log lines).
    (
        "insufficient disk space:",
        Rule::Failure("not enough disk space"),
    ),
    (
        "Not enough disk space to download the packages",
        Rule::Failure("not enough disk space"),
    ),
    (
        "error populating transaction after",
        Rule::Failure("the package transaction failed"),
    ),
    ("crashed on signal", Rule::Failure("a process crashed")),
    (
        "packaging: Missed: NoSuchPackage",
        Rule::Failure("a package is missing"),
    ),
    (
        "packaging: Installation failed",
        Rule::Failure("the package installation failed"),
    ),
    (
        "The following error occurred while installing.  This is a fatal error",
        Rule::Failure("a fatal installation error"),
    ),
    (
        "Error in POSTIN scriptlet in rpm package",
        Rule::Failure("an RPM scriptlet failed"),
    ),
    ("packaging: base repo ", Rule::BaseRepo),
    ("packaging: ", Rule::Requires),
    (" (anaconda) of user ", Rule::DumpedCore),
    // Anaconda pyanaconda/kickstart.py (RHEL 5 to now; "encountered running"
    // in RHEL 5): a %pre/%post that exits non-zero.
    (
        "running the kickstart script at line",
        Rule::KickstartScript,
    ),
    // Anaconda's thread manager (pyanaconda/threading.py, 19 to 28, then
    // core/threads.py) when the install or configuration thread raised, and
    // since the boss runs the install as a DBus task, when that task's
    // thread raised (corpus bonsai-crash, its journal: "Thread Failed:
    // AnaTaskThread-RunInstallationTask-1"). Other task threads of the
    // modules are not here: the same journal shows
    // UnmountFilesystemsTask failing in runs that went on.
    (
        "Thread Failed: AnaInstallThread",
        Rule::Failure("the installation thread failed"),
    ),
    (
        "Thread Failed: AnaConfigurationThread",
        Rule::Failure("the configuration thread failed"),
    ),
    (
        "Thread Failed: AnaTaskThread-RunInstallationTask",
        Rule::Failure("the installation task failed"),
    ),
    // Anaconda pyanaconda/core/util.py ipmi_report; constants.py
    // IPMI_STARTED 7, IPMI_FINISHED 8, IPMI_ABORTED 9, IPMI_FAILED 0xA.
    ("Reporting the IPMI event: ", Rule::Ipmi),
    // pyanaconda/modules/boss/installation.py: the task queue.
    ("Task started: ", Rule::Task),
    // dispatch.py of anaconda-11.1.2 (RHEL 5) and anaconda-13.21 (RHEL 6).
    ("moving (1) to step ", Rule::Step),
    // pyanaconda/kickstart.py runPostScripts (anaconda 19 to 44; "%%" is
    // how it is logged): the last step of every install since RHEL 7. The
    // logs copied to /var/log/anaconda are copied by the last %post, so a
    // copy ends here (corpus el7-aws-decareano, logs-srv, aws-trellix).
    (
        "Running kickstart %%post script(s)",
        Rule::LastStep("the installer ran its %post scripts, its last step, and stopped"),
    ),
    ("Running kickstart %%pre script(s)", Rule::Stage(Stage::Pre)),
    ("Queue started: ", Rule::Queue),
    // Package progress: the payload's "Installing NAME (N/M)" (Anaconda's
    // packaging logger, in the journal on RHEL 7: corpus el7-aws-decareano;
    // lorax mirrors it in livemedia.log: corpus bonsai-lmc).
    ("Installing ", Rule::Installing),
    // debian-installer's main-menu (main-menu.c, e.g. Sprezzatech/main-menu-udeb,
    // a copy of Debian's): "Menu item '%s' selected" as each step starts,
    // "Menu item '%s' failed." when its configuration failed (partman,
    // base-installer, apt-setup, pkgsel, grub-installer...), in d-i's
    // /var/log/syslog by the program main-menu.
    ("Menu item '", Rule::MenuItem),
    (
        "All kickstart %%post script(s) have been run",
        Rule::End("the installer ran all its %post scripts"),
    ),
];

/// The threads (Anaconda 19 and later, pyanaconda/threading.py): checked
/// after [`RULES`], with their own automaton below.
const THREADS: [(&str, Rule); 3] = [
    ("Thread Done: AnaInstallThread", Rule::InstallDone),
    (
        "Running Thread: AnaConfigurationThread",
        Rule::ConfigStarted,
    ),
    ("Thread Done: AnaConfigurationThread", Rule::ConfigDone),
];

/// Every anchor of [`RULES`] and [`THREADS`], in that order.
static ANCHORS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::new(RULES.iter().chain(&THREADS).map(|(a, _)| a))
        .expect("the anchors are a few short literals")
});

fn rule(pattern: usize) -> Rule {
    RULES
        .get(pattern)
        .or_else(|| THREADS.get(pattern - RULES.len()))
        .map(|(_, r)| *r)
        .expect("a pattern of ANCHORS")
}

/// Where the first anchor in `bytes` starts, if any.
pub fn first_anchor(bytes: &[u8]) -> Option<usize> {
    ANCHORS.find(bytes).map(|m| m.start())
}

/// What `line` of a file of `source` says, if anything. `line` is one line
/// without its newline, possibly cut. A failure wins over anything else the
/// line says.
pub fn classify(line: &str, source: Source) -> Option<Signal> {
    if source == Source::FirstBoot {
        return None;
    }
    // lorax monitor.py: a line that says IGNORED never counts (blivet logs
    // the tracebacks it handled so: corpus aws-trellix storage.log).
    if line.contains("IGNORED") {
        return None;
    }
    let mut other = None;
    for m in ANCHORS.find_overlapping_iter(line) {
        let rest = &line[m.end()..];
        let signal = match rule(m.pattern().as_usize()) {
            Rule::Failure(why) => Some(Signal::Failure(why)),
            Rule::Traceback => traceback(line, source),
            Rule::Ipmi => judge_ipmi(rest, source),
            Rule::BaseRepo => (!rest.starts_with("(CDROM/file") && rest.contains(" not valid"))
                .then_some(Signal::Failure("the base repository is not valid")),
            Rule::Requires => rest
                .contains(" requires ")
                .then_some(Signal::Failure("a package dependency is missing")),
            Rule::DumpedCore => dumped_core(&line[..m.start()], rest),
            Rule::Oops => (rest.starts_with(|c: char| c.is_ascii_hexdigit())
                || rest.contains("[#")
                || rest.starts_with("general protection fault"))
            .then_some(Signal::Failure("the kernel oopsed")),
            Rule::ProtectionFault => (!line.contains("traps:")).then_some(Signal::Failure(
                "the kernel oopsed (general protection fault)",
            )),
            Rule::KickstartScript => line
                .contains("Error code ")
                .then_some(Signal::Failure("a kickstart %pre/%post script failed")),
            Rule::Task => last_task(rest),
            Rule::Step => step(rest),
            Rule::End(why) => Some(Signal::End(why)),
            Rule::LastStep(why) => Some(Signal::LastStep(why)),
            Rule::Queue => rest
                .rsplit_once(" (")
                .and_then(|(name, _)| Stage::of_task(name))
                .map(Signal::Stage),
            Rule::Installing => package(rest),
            Rule::MenuItem => menu_item(line, rest, source),
            Rule::Stage(stage) => Some(Signal::Stage(stage)),
            Rule::InstallDone => Some(Signal::InstallDone),
            Rule::ConfigStarted => Some(Signal::ConfigStarted),
            Rule::ConfigDone => Some(Signal::ConfigDone),
        };
        match signal {
            Some(Signal::Failure(_)) => return signal,
            Some(s) => other = other.or(Some(s)),
            None => {}
        }
    }
    other
}

/// A Python traceback is a failure where Anaconda raised it: its crash dump,
/// its own log, or a syslog/journal line written by the program `anaconda`.
/// Any other program's traceback in the syslog is not (corpus logs-srv:
/// NetworkManager logs "agent failed save secrets request ...: Traceback"
/// for Anaconda's secret agent on a completed CentOS 7 install).
fn traceback(line: &str, source: Source) -> Option<Signal> {
    let ours = match source {
        Source::CrashDump | Source::AnacondaLog => true,
        Source::Syslog => program(line) == Some("anaconda"),
        Source::FirstBoot | Source::Other => false,
    };
    ours.then_some(Signal::Failure("Anaconda raised a Python exception"))
}

/// The program that wrote a syslog or journal line: the first word that is
/// not a date, time, level or host and ends at a `:` or `[pid]:`. Formats:
/// Anaconda's syslog (`03:13:10,368 DEBUG NetworkManager:<debug> ...`), the
/// journal (`Jul 05 03:13:10 host NetworkManager[1114]: ...`) and RFC 3164
/// (`<86>Feb 17 19:50:43 useradd[1257]: ...`).
fn program(line: &str) -> Option<&str> {
    line.split_ascii_whitespace().take(6).find_map(|word| {
        if word.starts_with(|c: char| c.is_ascii_digit()) {
            return None; // a day or a time
        }
        let name = &word[..word.find(':')?];
        let name = name.split('[').next().unwrap_or(name);
        Some(name.rsplit('>').next().unwrap_or(name))
    })
}

/// `Reporting the IPMI event: N` in Anaconda's log or written by Anaconda
/// into the syslog. 8 (IPMI_FINISHED) is logged by the installation
/// progress spoke after `Finish()` returned, that is after the installation
/// task raised nothing (pyanaconda/ui/{gui,tui}/spokes/installation_progress.py
/// `_on_installation_done`, anaconda-43.48; corpus bonsai-crash: the crashed
/// run's own anaconda.log, kept in its dump, has "The installation has
/// finished." then "CRT exception: Traceback" and no 8). 9 (IPMI_ABORTED)
/// is logged whenever the text UI's main loop quits
/// (pyanaconda/ui/tui/__init__.py `tui_quit_callback`), so after an 8 it is
/// the normal exit (corpus medba-os and bonsai-lmc, completed
/// livemedia-creator runs: 8 then 9); alone it is an abort (a failed %pre,
/// a kickstart error, the user quitting: pyanaconda/kickstart.py,
/// startup_utils.py). 10 (IPMI_FAILED, 0xA) is logged by the exception
/// handler (pyanaconda/exception.py).
fn judge_ipmi(rest: &str, source: Source) -> Option<Signal> {
    if !matches!(source, Source::AnacondaLog | Source::Syslog) {
        return None;
    }
    match rest.trim_end() {
        "8" => Some(Signal::End(
            "Anaconda reported the install finished (IPMI 0x8)",
        )),
        "9" => Some(Signal::Aborted),
        "10" => Some(Signal::Failure(
            "Anaconda reported the install failed (IPMI 0xA)",
        )),
        _ => None,
    }
}

/// `Task started: NAME (N/M)`: the last task (N == M) started. Every
/// corpus install that got there completed (lmc-fedora36: "Copy
/// installation logs (39/39)"; lmc-rocky91: "Run post installation scripts
/// (40/40)"); a failure in it still wins.
fn last_task(rest: &str) -> Option<Signal> {
    let counts = rest.trim_end().strip_suffix(')')?;
    let counts = &counts[counts.rfind('(')? + 1..];
    let (n, m) = counts.split_once('/')?;
    let (n, m) = (n.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    if n == m && n > 0 {
        return Some(Signal::LastStep(
            "the installer started its last task, and stopped",
        ));
    }
    Stage::of_task(rest[..rest.rfind(" (")?].trim()).map(Signal::Stage)
}

/// `moving (1) to step NAME`: `copylogs` comes after the packages and the
/// boot loader, then `methodcomplete`, `postscripts`, `dopostaction` and
/// `complete` (dispatch.py installSteps, anaconda-11.1.2 and -13.21). The
/// logs on an installed RHEL 5 or 6 are the copy made at `copylogs`, so they
/// end there (corpus el-daybreak, el-travisj, el6-knewhow, el-biztraumer).
fn step(rest: &str) -> Option<Signal> {
    match rest.trim_end() {
        "copylogs" => Some(Signal::LastStep(
            "the installer copied its logs to the installed system, and stopped",
        )),
        "complete" => Some(Signal::End("the installer reached its last step")),
        other => Stage::of_step(other).map(Signal::Stage),
    }
}

/// debian-installer's main-menu, in its syslog: `main-menu[PID]: INFO:
/// Menu item 'NAME' selected` starts a step, `main-menu[PID]: WARNING **:
/// Menu item 'NAME' failed.` is a step that failed (a genuine one, pasted
/// in a public report: "Nov 25 11:15:01 main-menu[3381]: WARNING **: Menu
/// item 'pkgsel' failed", after "tasksel: aptitude failed (100)").
/// `finish-install` is d-i's last step: it copies the logs to
/// /var/log/installer and reboots.
fn menu_item(line: &str, rest: &str, source: Source) -> Option<Signal> {
    if source != Source::Syslog || program(line) != Some("main-menu") {
        return None;
    }
    let (item, outcome) = rest.split_once('\'')?;
    if outcome.starts_with(" failed") {
        return Some(Signal::Failure("a debian-installer step failed"));
    }
    if !outcome.starts_with(" selected") {
        return None;
    }
    let stage = match item {
        "finish-install" => {
            return Some(Signal::LastStep(
                "debian-installer ran finish-install, its last step, and stopped",
            ))
        }
        i if i.starts_with("partman") || i == "disk-detect" => Stage::Storage,
        "bootstrap-base" | "apt-setup-udeb" | "pkgsel" | "base-installer" => Stage::Packages,
        i if i.starts_with("grub-installer")
            || i.ends_with("boot-installer")
            || i == "nobootloader" =>
        {
            Stage::Bootloader
        }
        _ => return None,
    };
    Some(Signal::Stage(stage))
}

/// `Installing NAME (N/M)`, the anchor being `Installing `.
fn package(rest: &str) -> Option<Signal> {
    let counts = rest.trim_end().strip_suffix(')')?;
    let (name, counts) = counts.rsplit_once(" (")?;
    let (n, m) = counts.split_once('/')?;
    let (n, m) = (n.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (!name.is_empty() && !name.contains(' ') && n <= m && m > 0).then_some(Signal::Package(n, m))
}

/// lorax: `Process [0-9]+ \(anaconda\) of user [0-9]+ dumped core`, the
/// anchor being ` (anaconda) of user `.
fn dumped_core(before: &str, after: &str) -> Option<Signal> {
    let digits_at_end = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let pid_ok = digits_at_end > 0 && before[..before.len() - digits_at_end].ends_with("Process ");
    let uid = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (pid_ok && uid > 0 && after[uid..].starts_with(" dumped core"))
        .then_some(Signal::Failure("Anaconda dumped core"))
}

#[cfg(test)]
mod tests;
