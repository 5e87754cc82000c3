//! The decisive lines of every case of the corpus (`ci/view/corpus-manifest`,
//! by case name): the lines a rule turns on, copied from the real logs, with
//! the file they are in. A rule change that would call a completed install
//! failed, or miss a crash or an end, fails here without the corpus.

use super::*;

const ANA: Source = Source::AnacondaLog;
const SYSLOG: Source = Source::Syslog;

fn says(line: &str, source: Source) -> Option<Signal> {
    classify(line, source)
}

fn is_failure(line: &str, source: Source) -> bool {
    matches!(says(line, source), Some(Signal::Failure(_)))
}

fn is_end(line: &str, source: Source) -> bool {
    matches!(says(line, source), Some(Signal::End(_)))
}

/// The installer's last step: the end once its logs stop growing.
fn is_last_step(line: &str, source: Source) -> bool {
    matches!(says(line, source), Some(Signal::LastStep(_)))
}

#[test]
fn sources_by_file_name() {
    for (file, source) in [
        ("anaconda-tb-yj11b8m4", Source::CrashDump),
        ("anaconda.log", Source::AnacondaLog),
        ("syslog", Source::Syslog),
        ("anaconda.syslog", Source::Syslog),
        ("journal.log", Source::Syslog),
        ("install.log.syslog", Source::Syslog),
        ("program.log", Source::Other),
        ("storage.log", Source::Other),
        ("ks-script-5qnQJp.log", Source::Other),
        ("dmesg.log", Source::FirstBoot),
        ("messages", Source::FirstBoot),
    ] {
        assert_eq!(source_of(file), source, "{file}");
    }
}

/// el6-knewhow (CentOS 6.5, completed): the kernel's taint warning with its
/// Call Trace, in anaconda.syslog. None of it is a failure.
#[test]
fn el6_knewhow_a_kernel_warning_is_not_a_failure() {
    for line in [
        "20:50:54,535 WARNING kernel:------------[ cut here ]------------",
        "20:50:54,535 WARNING kernel:WARNING: at kernel/rh_taint.c:13 mark_hardware_unsupported+0x39/0x40() (Not tainted)",
        "20:50:54,535 WARNING kernel:Pid: 0, comm: swapper Not tainted 2.6.32-431.el6.x86_64 #1",
        "20:50:54,535 WARNING kernel:Call Trace:",
        "20:50:54,535 WARNING kernel: [<ffffffff81071e27>] ? warn_slowpath_common+0x87/0xc0",
        "20:50:54,535 WARNING kernel:---[ end trace a7919e7f17c0a725 ]---",
    ] {
        assert_eq!(says(line, SYSLOG), None, "{line}");
    }
    assert!(is_last_step(
        "21:18:40,591 INFO    : moving (1) to step copylogs",
        ANA
    ));
}

/// logs-srv (CentOS 7 on VMware, completed): NetworkManager logs a Python
/// traceback of Anaconda's secret agent into syslog and journal.log.
#[test]
fn logs_srv_another_programs_traceback_is_not_a_failure() {
    let syslog = "03:13:10,368 DEBUG NetworkManager:<debug> [1593918790.3685] agent-manager: req[0x558e3fc0a900, :1.40/anaconda/0]: agent failed save secrets request [0x558e3fc0c1c0/\"ens192\"sav]: Traceback (most recent call last):#012";
    let journal = "Jul 05 03:13:10 openshiftrunner1 NetworkManager[1114]: <debug> [1593918790.3685] agent-manager: req[0x558e3fc0a900, :1.40/anaconda/0]: agent failed save secrets request [0x558e3fc0c1c0/\"ens192\"sav]: Traceback (most recent call last):";
    assert_eq!(says(syslog, SYSLOG), None);
    assert_eq!(says(journal, SYSLOG), None);
    assert!(is_last_step(
        "23:23:59,759 INFO anaconda: Running kickstart %%post script(s)",
        ANA
    ));
    // The same traceback written by Anaconda itself is a failure.
    assert!(is_failure(
        "Jul 05 03:13:10 host anaconda[1114]: Traceback (most recent call last):",
        SYSLOG
    ));
    assert!(is_failure(
        "03:13:10,368 ERR anaconda:Traceback (most recent call last):",
        SYSLOG
    ));
    assert!(is_failure("Traceback (most recent call last):", ANA));
}

/// aws-trellix (RHEL 8 image, completed): blivet's handled tracebacks are
/// marked IGNORED; the copy ends at task 43 of 44, the %post scripts.
#[test]
fn aws_trellix_ignored_tracebacks_and_post() {
    assert_eq!(
        says(
            "05:00:19,132 WARNING org.fedoraproject.Anaconda.Modules.Storage:DEBUG:blivet:IGNORED:                                 Traceback (most recent call last):",
            SYSLOG
        ),
        None
    );
    assert_eq!(
        says(
            "DEBUG:blivet:IGNORED:                                 Traceback (most recent call last):",
            Source::Other
        ),
        None
    );
    assert_eq!(
        says(
            "05:09:35,328 INF installation: Task started: Run post installation scripts (43/44)",
            ANA
        ),
        Some(Signal::Stage(Stage::Post))
    );
    assert!(is_last_step(
        "05:09:35,329 INF kickstart.script: Running kickstart %%post script(s)",
        ANA
    ));
}

/// lmc-fedora36, lmc-rocky91, lmc-fedora39 (livemedia-creator container
/// builds, completed): the task queue's last task and the %post scripts.
#[test]
fn lmc_task_queue_ends() {
    assert!(is_last_step(
        "07:48:37,448 INF installation: Task started: Copy installation logs (39/39)",
        ANA
    ));
    assert!(is_last_step(
        "19:32:49,343 INF installation: Task started: Run post installation scripts (40/40)",
        ANA
    ));
    assert!(is_end(
        "07:54:33,053 INF kickstart.script: All kickstart %%post script(s) have been run",
        ANA
    ));
    assert_eq!(
        says(
            "07:48:10,818 INF installation: Task started: Save system time to HW clock (1/39)",
            ANA
        ),
        None
    );
    assert_eq!(
        says(
            "07:46:16,917 INF core.util: Reporting the IPMI event: 7",
            ANA
        ),
        None
    );
}

/// medba-os and bonsai-lmc (Fedora 43 livemedia-creator, completed): IPMI 8
/// then 9. bonsai-crash (Fedora 43, crashed: PayloadInstallationError): the
/// dump, and the crashed run's own anaconda.log and journal inside it.
#[test]
fn ipmi_events() {
    assert_eq!(
        says(
            "15:10:13,511 INF core.util: Reporting the IPMI event: 8",
            ANA
        ),
        Some(Signal::End(
            "Anaconda reported the install finished (IPMI 0x8)"
        ))
    );
    assert_eq!(
        says(
            "15:10:13,515 INF core.util: Reporting the IPMI event: 9",
            ANA
        ),
        Some(Signal::Aborted)
    );
    assert!(is_failure(
        "12:00:00,000 INF core.util: Reporting the IPMI event: 10",
        ANA
    ));
    // Only Anaconda's own log or the syslog carry its IPMI events.
    assert_eq!(says("Reporting the IPMI event: 10", Source::Other), None);
    assert_eq!(source_of("anaconda-tb-yj11b8m4"), Source::CrashDump);
    assert!(is_failure(
        "Traceback (most recent call first):",
        Source::CrashDump
    ));
    assert!(is_failure(
        "09:24:09,912 CRT exception: Traceback (most recent call last):",
        ANA
    ));
    assert!(is_failure(
        "Apr 19 09:24:09 dynamic-pd01.res.v6.highway.a1.net org.fedoraproject.Anaconda.Boss[22668]: INFO:anaconda.core.threads:Thread Failed: AnaTaskThread-RunInstallationTask-1 (139960730396352)",
        SYSLOG
    ));
    // A module's other task failing is not the install failing.
    assert_eq!(
        says(
            "Apr 19 09:06:24 dynamic-pd01.res.v6.highway.a1.net org.fedoraproject.Anaconda.Modules.Storage[21282]: INFO:anaconda.core.threads:Thread Failed: AnaTaskThread-UnmountFilesystemsTask-1 (13985100979)",
            SYSLOG
        ),
        None
    );
}

/// el-daybreak (CentOS 5.6), el-travisj (CentOS 5), el-biztraumer (CentOS 6
/// live), el6-sourav (CentOS 6 over NFS), all completed: the dispatcher's
/// copylogs step ends each copy.
#[test]
fn dispatcher_steps() {
    for line in [
        "19:57:27 INFO    : moving (1) to step copylogs",
        "11:17:51 INFO    : moving (1) to step copylogs",
        "16:08:12,640 INFO    : moving (1) to step copylogs",
        "00:48:53,233 INFO    : moving (1) to step copylogs",
    ] {
        assert!(is_last_step(line, ANA), "{line}");
    }
    assert!(is_end("INFO    : moving (1) to step complete", ANA));
    for line in [
        "21:04:30,574 WARNING : step complete does not exist",
        "22:32:41 INFO    : moving (1) to step bootloadersetup",
        "22:31:10 INFO    : moving (1) to step welcome",
        "INFO anaconda: moving (1) to step completesomething",
        "moving (-1) to step complete",
    ] {
        assert_eq!(says(line, ANA), None, "{line}");
    }
}

/// el7-aws-decareano (CentOS 7 image, completed): the install thread is done
/// and the %post scripts run.
#[test]
fn el7_threads_and_post() {
    assert_eq!(
        says(
            "20:57:43,945 INFO anaconda: Thread Done: AnaInstallThread (139729684776704)",
            ANA
        ),
        Some(Signal::InstallDone)
    );
    assert!(is_last_step(
        "20:58:36,785 INFO anaconda: Running kickstart %%post script(s)",
        ANA
    ));
}

/// The kernel's real failures, and lorax's patterns, still count.
#[test]
fn kernel_and_lorax_failures() {
    for (line, want) in [
        (
            "[  42.1] Out of memory: Killed process 812 (anaconda)",
            "the kernel ran out of memory",
        ),
        (
            "kernel: Out of memory: Kill process 812 (anaconda) score 900",
            "the kernel ran out of memory",
        ),
        (
            "kernel:Kernel panic - not syncing: Attempted to kill init!",
            "the kernel panicked",
        ),
        (
            "kernel: BUG: unable to handle kernel NULL pointer dereference at 0000000000000008",
            "the kernel oopsed (bad memory access)",
        ),
        (
            "14:02:01,123 ERR packaging: Installation failed: DNF error",
            "the package installation failed",
        ),
        (
            "systemd-coredump[9]: Process 1234 (anaconda) of user 0 dumped core.",
            "Anaconda dumped core",
        ),
        (
            "DEBUG packaging: base repo (http://x/os) not valid -- removing it",
            "the base repository is not valid",
        ),
        (
            "INFO packaging: foo-1.0 requires libbar.so.1",
            "a package dependency is missing",
        ),
        (
            "14:05:00,1 ERR anaconda.kickstart: Error code 1 running the kickstart script at line 42",
            "a kickstart %pre/%post script failed",
        ),
        (
            "Error code 2 encountered running the kickstart script at line 7",
            "a kickstart %pre/%post script failed",
        ),
        (
            "INFO anaconda.threading: Thread Failed: AnaInstallThread (1404)",
            "the installation thread failed",
        ),
    ] {
        assert_eq!(says(line, SYSLOG), Some(Signal::Failure(want)), "{line}");
    }
    for line in [
        "",
        "kernel: Call Trace:",
        "Traceback (most recent call last): IGNORED",
        "DEBUG packaging: base repo (CDROM/file:///run/install/repo) not valid",
        "Process x (anaconda) of user 0 dumped core",
        "Process 12 (anaconda) of user  dumped core",
        "INFO packaging: nothing is required",
        "running the kickstart script at line 3 went fine",
    ] {
        assert_eq!(says(line, SYSLOG), None, "{line:?}");
    }
    // Nothing in the first boot's logs is an install failure.
    assert_eq!(says("Kernel panic - not syncing", Source::FirstBoot), None);
}

/// Stages and package progress, from the corpus's own lines.
#[test]
fn stages() {
    for (line, source, stage) in [
        // lmc-rocky91's task queue.
        (
            "19:32:02,400 INF installation: Queue started: Early storage configuration (3/16)",
            ANA,
            Stage::Storage,
        ),
        (
            "19:32:02,401 INF installation: Task started: Create storage layout (2/40)",
            ANA,
            Stage::Storage,
        ),
        (
            "19:32:10,000 INF installation: Task started: Install the payload (10/40)",
            ANA,
            Stage::Packages,
        ),
        (
            "19:32:40,000 INF installation: Task started: Install bootloader (12/40)",
            ANA,
            Stage::Bootloader,
        ),
        (
            "19:32:41,000 INF installation: Task started: Configure SELinux (14/40)",
            ANA,
            Stage::Configuration,
        ),
        // el6-knewhow's dispatcher.
        (
            "20:55:00,000 INFO    : moving (1) to step enablefilesystems",
            ANA,
            Stage::Storage,
        ),
        (
            "20:56:00,000 INFO    : moving (1) to step installpackages",
            ANA,
            Stage::Packages,
        ),
        (
            "21:18:00,000 INFO    : moving (1) to step instbootloader",
            ANA,
            Stage::Bootloader,
        ),
        (
            "12:00:00,000 INFO anaconda: Running kickstart %%pre script(s)",
            ANA,
            Stage::Pre,
        ),
    ] {
        assert_eq!(says(line, source), Some(Signal::Stage(stage)), "{line}");
    }
    // el7-aws-decareano's journal, bonsai-lmc's livemedia.log.
    assert_eq!(
        says(
            "Jan 28 20:52:03 localhost.localdomain packaging[3956]: Installing grub2-common (2/317)",
            SYSLOG
        ),
        Some(Signal::Package(2, 317))
    );
    assert_eq!(
        says(
            "2026-04-19 09:41:41,324 INFO pylorax: Installing libgpg-error.x86_64 (245/1999)",
            Source::Other
        ),
        Some(Signal::Package(245, 1999))
    );
    for line in [
        "Installing centos-indexhtml-6-2.el6.centos.noarch",
        "Installing foo (3/2)",
        "Installing the system (1/2)",
        "INF installation: Task started: Run %pre-install scripts (5/40)",
    ] {
        assert_eq!(says(line, SYSLOG), None, "{line}");
    }
}

/// debian-installer's main-menu in its syslog: a step failing is failed
/// (the genuine pkgsel failure quoted in rules.rs), its steps are stages,
/// finish-install its last step; other programs' lines say nothing.
#[test]
fn debian_installer_main_menu() {
    for line in [
        "Nov 25 11:15:01 main-menu[3381]: WARNING **: Menu item 'pkgsel' failed",
        "Sep  4 14:03:40 main-menu[315]: WARNING **: Menu item 'partman-base' failed.",
    ] {
        assert_eq!(
            says(line, SYSLOG),
            Some(Signal::Failure("a debian-installer step failed")),
            "{line}"
        );
    }
    for (line, stage) in [
        (
            "Sep  4 14:01:12 main-menu[315]: INFO: Menu item 'partman-base' selected",
            Stage::Storage,
        ),
        (
            "Sep  4 14:05:12 main-menu[315]: INFO: Menu item 'bootstrap-base' selected",
            Stage::Packages,
        ),
        (
            "Sep  4 14:15:12 main-menu[315]: INFO: Menu item 'pkgsel' selected",
            Stage::Packages,
        ),
        (
            "Sep  4 14:25:12 main-menu[315]: INFO: Menu item 'grub-installer' selected",
            Stage::Bootloader,
        ),
    ] {
        assert_eq!(says(line, SYSLOG), Some(Signal::Stage(stage)), "{line}");
    }
    assert!(is_last_step(
        "Sep  4 14:30:00 main-menu[315]: INFO: Menu item 'finish-install' selected",
        SYSLOG
    ));
    for (line, source) in [
        ("Sep  4 14:01:12 main-menu[315]: INFO: Menu item 'netcfg' selected", SYSLOG),
        ("Sep  4 14:01:12 main-menu[315]: INFO: Menu item 'pkgsel' succeeded but requested to be left unconfigured.", SYSLOG),
        ("Sep  4 14:01:12 in-target: Menu item 'pkgsel' failed", SYSLOG),
        ("main-menu[315]: WARNING **: Menu item 'pkgsel' failed", Source::Other),
    ] {
        assert_eq!(says(line, source), None, "{line}");
    }
}

/// di-joscalixto and di-mateoholzer (Debian 10), di-juliepradelli (Debian
/// 8), all completed: their
/// syslogs' warnings are no failure (an apt update that failed once, a
/// title main-menu could not set), finish-install is their last step.
#[test]
fn debian_installer_corpus() {
    for line in [
        "Jan  9 14:59:52 base-installer: warning: apt update failed: 100",
        "Mar 30 11:38:28 main-menu[221]: WARNING **: Unable to set title for brltty-udeb.",
        "Jan  9 14:48:48 netcfg[3840]: WARNING **: Couldn't read Wpasupplicant pid file, not trying to kill.",
        "Jan  9 15:13:21 main-menu[365]: INFO: Menu item 'grub-installer' succeeded but requested to be left unconfigured.",
    ] {
        assert_eq!(says(line, SYSLOG), None, "{line}");
    }
    for line in [
        "Jan  9 15:13:41 main-menu[365]: INFO: Menu item 'finish-install' selected",
        "Mar 30 12:35:14 main-menu[221]: INFO: Menu item 'finish-install' selected",
        // di-juliepradelli (Debian 8).
        "Apr 10 13:14:34 main-menu[163]: INFO: Menu item 'finish-install' selected",
    ] {
        assert!(is_last_step(line, SYSLOG), "{line}");
    }
    assert_eq!(
        says(
            "Mar 30 12:22:43 main-menu[221]: INFO: Menu item 'pkgsel' selected",
            SYSLOG
        ),
        Some(Signal::Stage(Stage::Packages))
    );
}

/// el-bilakanti (RHEL 5/6 install.log only) and ubiquity-dolpari,
/// ubiquity-ganapathi (Ubuntu desktop installs), all completed: no line of
/// theirs is a failure, and none is an end: the view calls them idle.
#[test]
fn installs_whose_logs_hold_no_end() {
    for (line, source) in [
        ("Installing libgcc-4.4.7-16.el6.x86_64", Source::Other),
        (
            "warning: libgcc-4.4.7-16.el6.x86_64: Header V3 RSA/SHA1 Signature, key ID c105b9de: NOKEY",
            Source::Other,
        ),
        ("*** FINISHED INSTALLING PACKAGES ***", Source::Other),
        ("Jun 17 11:06:37 ubuntu ubiquity[1740]: Ubiquity 2.21.63.6", SYSLOG),
        (
            "Jun 17 11:06:30 ubuntu gpu-manager[1220]: Error: can't open /lib/modules/4.13.0-36-generic/updates/dkms",
            SYSLOG,
        ),
        (
            "Mar 22 14:07:38 ubuntu plugininstall.py: log-output -t ubiquity chroot /target umount /sys",
            SYSLOG,
        ),
    ] {
        assert_eq!(says(line, source), None, "{line}");
    }
}

/// The kernel's oops is a failure; a program that the kernel reports
/// crashed, or another program saying "Oops", is not (the kernel's formats:
/// arch/x86/kernel/traps.c `do_trap`/`exc_general_protection` for a user
/// process, "traps: NAME[PID] general protection fault ip:..."; die() for
/// the kernel itself, "general protection fault: 0000 [#1] SMP" and
/// "Oops: 0000 [#1] SMP").
#[test]
fn a_kernel_oops_is_a_failure_a_crashed_program_is_not() {
    for line in [
        "Dec  6 04:01:02 host kernel: general protection fault: 0000 [#1] SMP PTI",
        "Dec  6 04:01:02 host kernel: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP NOPTI",
        "Dec  6 04:01:02 host kernel: Oops: 0002 [#1] SMP",
        "Dec  6 04:01:02 host kernel: Oops: general protection fault, probably for non-canonical address 0x1: 0000 [#1] PREEMPT SMP",
    ] {
        assert!(is_failure(line, SYSLOG), "{line}");
    }
    for line in [
        "Dec  6 04:01:02 host kernel: traps: gnome-shell[1821] general protection fault ip:7f2c3 sp:7ffd error:0 in libc.so.6[7f2c0+155000]",
        "Dec  6 04:01:02 host kernel: traps: Xorg[934] general protection fault ip:55d1 sp:7ffc error:0",
        "Dec  6 04:01:02 host gnome-shell[1821]: Oops: the extension could not be loaded",
    ] {
        assert_eq!(says(line, SYSLOG), None, "{line}");
    }
}
