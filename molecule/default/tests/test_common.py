"""Role common, checked by behaviour on each platform."""

import json


def test_timezone_is_effective(host):
    # The zone really applies: a process started now reports New York's offset name.
    out = host.check_output("date +%Z")
    assert out in ("EST", "EDT"), out
    assert host.file("/etc/timezone").content_string.strip() == "America/New_York"


def test_psutil_importable_by_system_python(host):
    out = host.check_output(
        "/usr/bin/python3 -c 'import psutil, json; print(json.dumps(psutil.virtual_memory()._asdict()))'")
    assert json.loads(out)["total"] > 0


def test_service_account(host):
    user = host.user("trader")
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/var/lib/trader"
    assert set(user.groups) >= {"trader", "tradeops", "adm"}
    assert user.uid < 1000  # system account


def test_directory_owned_and_private(host):
    d = host.file("/srv/tradeops")
    assert d.is_directory
    assert (d.user, d.group, d.mode) == ("trader", "tradeops", 0o750)
    # The group can enter, others cannot.
    assert host.run("runuser -u nobody -- ls /srv/tradeops").rc != 0
    assert host.run("runuser -u trader -- touch /srv/tradeops/probe").rc == 0


def test_journald_caps_in_force(host):
    # journald was restarted after the drop-in changed: its running config has the cap.
    cfg = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=96M" in cfg
    journald = host.service("systemd-journald")
    assert journald.is_running
    started = int(host.check_output("systemctl show -P ActiveEnterTimestampMonotonic systemd-journald"))
    dropin_mtime = host.file("/etc/systemd/journald.conf.d/50-tradeops.conf").mtime.timestamp()
    boot_to_now = float(host.check_output("cut -d' ' -f1 /proc/uptime"))
    now = float(host.check_output("date +%s.%N"))
    # monotonic start (µs since boot) later than the drop-in's write time
    assert started / 1e6 >= dropin_mtime - (now - boot_to_now) - 1


def test_logrotate_policy_rotates(host):
    # Force a rotation of a real file under the log dir with the installed policy.
    host.run_expect([0], "sh -c 'echo line > /var/log/tradeops/probe.log'")
    rc = host.run("logrotate --force /etc/logrotate.d/tradeops")
    assert rc.rc == 0, rc.stderr
    assert host.file("/var/log/tradeops/probe.log.1").exists
