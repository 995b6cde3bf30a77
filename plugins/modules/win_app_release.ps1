#!powershell
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Windows twin of app_release: releases under <path>\releases\<version>-<UTC yyyyMMddTHHmmssZ>, each with its
# own virtualenv installed offline from a wheelhouse; <path>\current is a junction retargeted in place (one
# FSCTL_SET_REPARSE_POINT: readers see the old or the new target, never no junction); <path>\ledger.jsonl
# holds one JSON line per action with the SAME fields as plugins/module_utils/tradeops_release.py
# (time, action, user, host, version, release, wheelhouse_sha256, outcome, duration_s, reason, previous);
# <path>\deploy.lock holds the deploy lock's holder (owner, host, pid, time, epoch, reason).

#AnsibleRequires -CSharpUtil Ansible.Basic
#Requires -Module Ansible.ModuleUtils.ArgvParser
#Requires -Module Ansible.ModuleUtils.CommandUtil

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$spec = @{
    options = @{
        path = @{ type = 'path'; required = $true }
        state = @{
            type = 'str'
            default = 'list'
            choices = @('create', 'activate', 'rollback', 'mark', 'prune', 'list', 'lock', 'unlock')
        }
        version = @{ type = 'str' }
        release = @{ type = 'str' }
        wheelhouse = @{ type = 'path' }
        package = @{ type = 'str' }
        python = @{ type = 'path' }
        keep = @{ type = 'int'; default = 5 }
        outcome = @{ type = 'str'; choices = @('good', 'bad') }
        reason = @{ type = 'str' }
        allow_bad = @{ type = 'bool'; default = $false }
        actor = @{ type = 'str' }
        lock_owner = @{ type = 'str' }
        lock_host = @{ type = 'str' }
        lock_pid = @{ type = 'int' }
        lock_reason = @{ type = 'str' }
        lock_stale_after = @{ type = 'int'; default = 1800 }
        force_unlock = @{ type = 'bool'; default = $false }
        record = @{ type = 'bool'; default = $true }
    }
    required_if = @(
        , @('state', 'create', @('version', 'wheelhouse', 'package', 'python'))
        , @('state', 'mark', @('outcome'))
    )
    supports_check_mode = $true
}

$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)

$Root = $module.Params.path.TrimEnd('\')
$ReleasesDir = Join-Path $Root 'releases'
$LedgerPath = Join-Path $Root 'ledger.jsonl'
$LockPath = Join-Path $Root 'deploy.lock'
$CurrentLink = Join-Path $Root 'current'
$VersionPattern = '^[A-Za-z0-9][A-Za-z0-9._+!-]{0,99}\z'
$ReleaseIdPattern = '^(?<version>[A-Za-z0-9][A-Za-z0-9._+!-]*)-(?<stamp>\d{8}T\d{6}Z)\z'
$Invariant = [System.Globalization.CultureInfo]::InvariantCulture
$Actor = if ($module.Params.actor) { $module.Params.actor } else { "$env:USERNAME" }
$ThisHost = [System.Net.Dns]::GetHostName()

Add-Type -TypeDefinition @'
using System;
using System.ComponentModel;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Tradeops
{
    public static class Junction
    {
        const uint GENERIC_WRITE = 0x40000000;
        const uint FILE_SHARE_ALL = 0x7;
        const uint OPEN_EXISTING = 3;
        const uint FILE_FLAG_BACKUP_SEMANTICS = 0x02000000;
        const uint FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000;
        const uint FSCTL_SET_REPARSE_POINT = 0x000900A4;
        const uint IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003;

        [DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
        static extern SafeFileHandle CreateFileW(string name, uint access, uint share, IntPtr security,
            uint disposition, uint flags, IntPtr template);

        [DllImport("kernel32.dll", SetLastError = true)]
        static extern bool DeviceIoControl(SafeFileHandle handle, uint code, byte[] inBuffer, int inSize,
            IntPtr outBuffer, int outSize, out int returned, IntPtr overlapped);

        // Rewrites the mount-point reparse data of an existing junction: one call, so the
        // junction points at the old or at the new target, and is never absent.
        public static void SetTarget(string junction, string target)
        {
            string full = Path.GetFullPath(target);
            byte[] sub = Encoding.Unicode.GetBytes(@"\??\" + full);
            byte[] print = Encoding.Unicode.GetBytes(full);
            int dataLength = 8 + sub.Length + 2 + print.Length + 2;
            byte[] buffer = new byte[8 + dataLength];
            BitConverter.GetBytes(IO_REPARSE_TAG_MOUNT_POINT).CopyTo(buffer, 0);
            BitConverter.GetBytes((ushort)dataLength).CopyTo(buffer, 4);
            BitConverter.GetBytes((ushort)0).CopyTo(buffer, 8);
            BitConverter.GetBytes((ushort)sub.Length).CopyTo(buffer, 10);
            BitConverter.GetBytes((ushort)(sub.Length + 2)).CopyTo(buffer, 12);
            BitConverter.GetBytes((ushort)print.Length).CopyTo(buffer, 14);
            sub.CopyTo(buffer, 16);
            print.CopyTo(buffer, 16 + sub.Length + 2);
            using (SafeFileHandle handle = CreateFileW(junction, GENERIC_WRITE, FILE_SHARE_ALL, IntPtr.Zero,
                OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT, IntPtr.Zero))
            {
                if (handle.IsInvalid)
                    throw new Win32Exception(Marshal.GetLastWin32Error(), "cannot open junction " + junction);
                int returned;
                if (!DeviceIoControl(handle, FSCTL_SET_REPARSE_POINT, buffer, buffer.Length, IntPtr.Zero, 0,
                    out returned, IntPtr.Zero))
                    throw new Win32Exception(Marshal.GetLastWin32Error(), "cannot retarget junction " + junction);
            }
        }
    }
}
'@

# ---------------------------------------------------------------------------- helpers

function Get-UtcStamp {
    param([datetime]$When)
    return $When.ToUniversalTime().ToString("yyyyMMdd'T'HHmmss'Z'", $Invariant)
}

function Get-UtcIso {
    param([datetime]$When)
    return $When.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", $Invariant)
}

function Get-Epoch {
    return [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0
}

function ConvertTo-SortedJson {
    # One compact JSON line with sorted keys, like json.dumps(sort_keys=True, separators=(",", ":")).
    param($Entry)
    $sorted = [ordered]@{}
    foreach ($key in @($Entry.Keys | Sort-Object { [string]$_ } -CaseSensitive)) {
        $value = $Entry[$key]
        if ($value -is [System.Collections.IDictionary]) {
            $inner = [ordered]@{}
            foreach ($k in @($value.Keys | Sort-Object { [string]$_ } -CaseSensitive)) { $inner[$k] = $value[$k] }
            $value = $inner
        }
        $sorted[$key] = $value
    }
    return (ConvertTo-Json -InputObject $sorted -Compress -Depth 5)
}

function Add-LedgerLine {
    param($Entry)
    if (-not (Test-Path -LiteralPath $Root)) { New-Item -ItemType Directory -Path $Root -Force | Out-Null }
    $bytes = [System.Text.Encoding]::UTF8.GetBytes((ConvertTo-SortedJson -Entry $Entry) + "`n")
    $stream = New-Object System.IO.FileStream($LedgerPath, [System.IO.FileMode]::Append,
        [System.IO.FileAccess]::Write, [System.IO.FileShare]::Read)
    try {
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Flush($true)
    }
    finally {
        $stream.Dispose()
    }
}

function New-LedgerEntry {
    param([string]$Action, [hashtable]$Fields = @{})
    $entry = @{
        time = Get-UtcIso -When ([datetime]::UtcNow)
        action = $Action
        user = $Actor
        host = $ThisHost
        version = $null
        release = $null
        wheelhouse_sha256 = $null
        outcome = $null
        duration_s = $null
        reason = $null
        previous = $null
    }
    foreach ($key in $Fields.Keys) { $entry[$key] = $Fields[$key] }
    return $entry
}

function Write-Record {
    param([string]$Action, [hashtable]$Fields = @{})
    $entry = New-LedgerEntry -Action $Action -Fields $Fields
    Add-LedgerLine -Entry $entry
    return $entry
}

function Read-Ledger {
    $entries = New-Object System.Collections.ArrayList
    $bad = 0
    if (Test-Path -LiteralPath $LedgerPath) {
        foreach ($line in [System.IO.File]::ReadAllLines($LedgerPath)) {
            if (-not $line.Trim()) { continue }
            try {
                $item = ConvertFrom-Json -InputObject $line
                [void]$entries.Add($item)
            }
            catch {
                $bad += 1
            }
        }
    }
    return @{ entries = $entries; bad = $bad }
}

function Get-Field {
    param($Object, [string]$Name)
    if ($null -eq $Object) { return $null }
    $prop = $Object.PSObject.Properties[$Name]
    if ($null -eq $prop) { return $null }
    return $prop.Value
}

function Get-ReleaseIds {
    # Release directories that are complete (their release.json exists).
    if (-not (Test-Path -LiteralPath $ReleasesDir)) { return @() }
    $ids = @()
    foreach ($dir in Get-ChildItem -LiteralPath $ReleasesDir -Directory) {
        if ($dir.Name -match $ReleaseIdPattern -and (Test-Path -LiteralPath (Join-Path $dir.FullName 'release.json'))) {
            $ids += $dir.Name
        }
    }
    return $ids
}

function Get-StampOf {
    param([string]$ReleaseId)
    if ($ReleaseId -match $ReleaseIdPattern) { return $Matches['stamp'] }
    return '00000000T000000Z'
}

function Get-ReleaseOrder {
    # Oldest first: the order of the ledger's create lines; releases it does not know go by their id's stamp.
    param([string[]]$OnDisk, $Ledger)
    $ordered = New-Object System.Collections.ArrayList
    foreach ($entry in $Ledger) {
        $rid = Get-Field $entry 'release'
        if ((Get-Field $entry 'action') -eq 'create' -and (Get-Field $entry 'outcome') -eq 'created' -and
            $OnDisk -contains $rid -and -not $ordered.Contains($rid)) {
            [void]$ordered.Add($rid)
        }
    }
    $missing = @($OnDisk | Where-Object { -not $ordered.Contains($_) } | Sort-Object { Get-StampOf $_ }, { $_ })
    foreach ($rid in $missing) {
        $stamp = Get-StampOf $rid
        $index = $ordered.Count
        for ($i = 0; $i -lt $ordered.Count; $i++) {
            if ([string]::CompareOrdinal((Get-StampOf $ordered[$i]), $stamp) -gt 0) { $index = $i; break }
        }
        $ordered.Insert($index, $rid)
    }
    return , @($ordered)
}

function Get-ReleaseStatus {
    # Latest mark of each release: @{ release = @(good|bad, reason) }.
    param($Ledger)
    $status = @{}
    foreach ($entry in $Ledger) {
        $outcome = Get-Field $entry 'outcome'
        $rid = Get-Field $entry 'release'
        if ((Get-Field $entry 'action') -eq 'mark' -and @('good', 'bad') -contains $outcome -and $rid) {
            $status[$rid] = @($outcome, (Get-Field $entry 'reason'))
        }
    }
    return $status
}

function Get-StatusOf {
    param($Status, [string]$ReleaseId)
    if ($Status.ContainsKey($ReleaseId)) { return $Status[$ReleaseId][0] }
    return 'unknown'
}

function Get-PreviousGood {
    param([string[]]$Order, $Status, [string]$Current)
    $index = [array]::IndexOf($Order, $Current)
    $before = if ($index -ge 0) { @($Order | Select-Object -First $index) } else { @($Order | Where-Object { $_ -ne $Current }) }
    $goods = @($before | Where-Object { (Get-StatusOf $Status $_) -eq 'good' })
    if ($goods.Count -eq 0) { return $null }
    return $goods[-1]
}

function Get-LastGood {
    param([string[]]$Order, $Status)
    $goods = @($Order | Where-Object { (Get-StatusOf $Status $_) -eq 'good' })
    if ($goods.Count -eq 0) { return $null }
    return $goods[-1]
}

function Get-CurrentRelease {
    if (-not (Test-Path -LiteralPath $CurrentLink)) { return $null }
    $item = Get-Item -LiteralPath $CurrentLink -Force
    if ($item.LinkType -ne 'Junction') {
        $module.FailJson("$CurrentLink exists but is not a junction (it is a $($item.LinkType) directory): move it away; " +
            "win_app_release manages current as a junction to releases\<id>")
    }
    $target = @($item.Target)[0]
    return Split-Path -Leaf $target
}

function Read-Meta {
    param([string]$ReleaseId)
    $file = Join-Path (Join-Path $ReleasesDir $ReleaseId) 'release.json'
    if (-not (Test-Path -LiteralPath $file)) { return $null }
    return (ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($file)))
}

function Get-State {
    $ledger = (Read-Ledger).entries
    $order = Get-ReleaseOrder -OnDisk (Get-ReleaseIds) -Ledger $ledger
    return @{ ledger = $ledger; order = $order; status = (Get-ReleaseStatus -Ledger $ledger); current = (Get-CurrentRelease) }
}

function Resolve-Release {
    param($State)
    $release = $module.Params.release
    $version = $module.Params.version
    if ($release) {
        if ($State.order -notcontains $release) {
            $module.FailJson("release $release does not exist under $ReleasesDir; existing releases: " +
                "$(if ($State.order.Count) { $State.order -join ', ' } else { 'none' })")
        }
        return $release
    }
    if ($version) {
        $same = @($State.order | Where-Object { $_ -match $ReleaseIdPattern -and $Matches['version'] -eq $version })
        if ($same.Count -eq 0) {
            $module.FailJson("no release of version $version under ${ReleasesDir}; existing releases: " +
                "$(if ($State.order.Count) { $State.order -join ', ' } else { 'none' })")
        }
        $good = @($same | Where-Object { (Get-StatusOf $State.status $_) -eq 'good' })
        if ($good.Count) { return $good[-1] }
        return $same[-1]
    }
    $module.FailJson('give release= (a release id) or version=')
}

function Get-WheelhouseDigest {
    # sha256 over "name sha256" lines of every file of the wheelhouse, sorted by name.
    param([string]$Wheelhouse)
    $lines = foreach ($file in @(Get-ChildItem -LiteralPath $Wheelhouse -File | Sort-Object Name)) {
        "$($file.Name) $((Get-FileHash -LiteralPath $file.FullName -Algorithm SHA256).Hash.ToLowerInvariant())"
    }
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        $digest = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes((@($lines) -join "`n")))
    }
    finally {
        $sha.Dispose()
    }
    return (-join ($digest | ForEach-Object { $_.ToString('x2') }))
}

function Invoke-Checked {
    param([string[]]$Argv, [string]$What)
    $command = Argv-ToString -arguments $Argv
    $result = Run-Command -command $command
    if ($result.rc -ne 0) {
        $module.FailJson("$What failed (exit $($result.rc)): $command`n$($result.stderr)$($result.stdout)")
    }
    return $result
}

function Set-Current {
    param([string]$ReleaseId)
    $target = Join-Path $ReleasesDir $ReleaseId
    if (Test-Path -LiteralPath $CurrentLink) {
        [Tradeops.Junction]::SetTarget($CurrentLink, $target)
    }
    else {
        New-Item -ItemType Junction -Path $CurrentLink -Target $target | Out-Null
    }
}

function Get-SwitchDiff {
    param([string]$Before, [string]$After)
    $show = { param($r) if ($r) { "current -> releases\$r`n" } else { "current absent`n" } }
    return @{ before = (& $show $Before); after = (& $show $After) }
}

function Invoke-Switch {
    param($State, [string]$Target, [string]$Action, [datetime]$Started)
    $current = $State.current
    $meta = Read-Meta -ReleaseId $Target
    $module.Result.changed = ($Target -ne $current)
    $module.Result.release = $Target
    $module.Result.release_path = Join-Path $ReleasesDir $Target
    $module.Result.previous = $current
    $module.Result.version = Get-Field $meta 'version'
    $module.Diff.before = (Get-SwitchDiff -Before $current -After $Target).before
    $module.Diff.after = (Get-SwitchDiff -Before $current -After $Target).after
    if ($Target -ne $current -and -not $module.CheckMode) {
        Set-Current -ReleaseId $Target
        $module.Result.ledger_entry = Write-Record -Action $Action -Fields @{
            version = Get-Field $meta 'version'
            release = $Target
            wheelhouse_sha256 = Get-Field $meta 'wheelhouse_sha256'
            outcome = 'switched'
            duration_s = [math]::Round(((Get-Date) - $Started).TotalSeconds, 3)
            reason = $module.Params.reason
            previous = $current
        }
    }
}

# ---------------------------------------------------------------------------- lock

function Read-Lock {
    if (-not (Test-Path -LiteralPath $LockPath)) { return $null }
    $mtime = [DateTimeOffset]::new((Get-Item -LiteralPath $LockPath).LastWriteTimeUtc).ToUnixTimeSeconds()
    try {
        $data = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($LockPath))
        $pidValue = Get-Field $data 'pid'
        return @{
            owner = [string](Get-Field $data 'owner')
            host = [string](Get-Field $data 'host')
            pid = if ($null -ne $pidValue -and "$pidValue" -ne '') { [int]$pidValue } else { $null }
            time = [string](Get-Field $data 'time')
            epoch = [double](Get-Field $data 'epoch')
            reason = Get-Field $data 'reason'
        }
    }
    catch {
        return @{ owner = 'unknown'; host = 'unknown'; pid = $null; time = ''; epoch = [double]$mtime; reason = 'unreadable lock file' }
    }
}

function Get-LockStaleness {
    param($Holder, [double]$Now)
    if (($Now - $Holder.epoch) -gt $module.Params.lock_stale_after) { return "older than $($module.Params.lock_stale_after) s" }
    if ($Holder.owner -eq 'unknown' -and $Holder.reason -eq 'unreadable lock file') { return 'unreadable lock file' }
    if ($Holder.pid -and $Holder.host -eq $ThisHost -and -not (Get-Process -Id $Holder.pid -ErrorAction SilentlyContinue)) {
        return "process $($Holder.pid) on $ThisHost is gone"
    }
    return $null
}

function Format-Holder {
    param($Holder, [double]$Now)
    $pidText = if ($Holder.pid) { " pid $($Holder.pid)" } else { '' }
    $why = if ($Holder.reason) { ", reason: $($Holder.reason)" } else { '' }
    return "$($Holder.owner)@$($Holder.host)$pidText since $($Holder.time) ($([int]($Now - $Holder.epoch)) s ago$why)"
}

function Invoke-Lock {
    $owner = if ($module.Params.lock_owner) { $module.Params.lock_owner } else { $Actor }
    $lockHost = if ($module.Params.lock_host) { $module.Params.lock_host } else { $ThisHost }
    $now = Get-Epoch
    $holder = Read-Lock
    $broken = $null
    if ($null -ne $holder) {
        $stale = Get-LockStaleness -Holder $holder -Now $now
        if ($holder.owner -eq $owner -and $holder.host -eq $lockHost -and $null -ne $module.Params.lock_pid -and
            $holder.pid -eq $module.Params.lock_pid) {
            $module.Result.lock = $holder
            $module.Result.msg = 'lock already held by us'
            return
        }
        if (-not $module.Params.force_unlock) {
            $module.Result.lock = $holder
            if ($stale) {
                $module.FailJson("deploy lock $LockPath is stale ($stale): held by $(Format-Holder $holder $now). " +
                    'If that deploy is dead, re-run with -e force_unlock=true to break it')
            }
            $module.FailJson("deploy lock $LockPath is held by $(Format-Holder $holder $now). Wait for that deploy to " +
                'finish; if you are sure it is dead, re-run with -e force_unlock=true')
        }
        $broken = $holder.Clone()
        $broken.stale_reason = $stale
    }
    $info = @{
        owner = $owner; host = $lockHost; pid = $module.Params.lock_pid
        time = Get-UtcIso -When ([datetime]::UtcNow); epoch = $now; reason = $module.Params.lock_reason
    }
    $module.Result.changed = $true
    $module.Result.lock = $info
    $module.Result.broken = $broken
    if ($module.CheckMode) { return }
    if ($null -ne $broken) { Remove-Item -LiteralPath $LockPath -Force -ErrorAction SilentlyContinue }
    if (-not (Test-Path -LiteralPath $Root)) { New-Item -ItemType Directory -Path $Root -Force | Out-Null }
    # CreateNew is an exclusive create: a second deploy racing for the lock gets an IOException.
    $bytes = [System.Text.Encoding]::UTF8.GetBytes((ConvertTo-SortedJson -Entry $info) + "`n")
    try {
        $stream = New-Object System.IO.FileStream($LockPath, [System.IO.FileMode]::CreateNew,
            [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
    }
    catch [System.IO.IOException] {
        $module.FailJson("deploy lock $LockPath was taken meanwhile by another deploy; try again later")
    }
    try {
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Flush($true)
    }
    finally {
        $stream.Dispose()
    }
    if (-not $module.Params.record -and $null -eq $broken) { return }
    $outcome = if ($broken) { 'broken-and-acquired' } else { 'acquired' }
    $module.Result.ledger_entry = Write-Record -Action 'lock' -Fields @{
        outcome = $outcome; reason = $module.Params.lock_reason; lock_owner = $owner; lock_host = $lockHost
        lock_pid = $module.Params.lock_pid; broken = $broken
    }
}

function Invoke-Unlock {
    $owner = if ($module.Params.lock_owner) { $module.Params.lock_owner } else { $Actor }
    $lockHost = if ($module.Params.lock_host) { $module.Params.lock_host } else { $ThisHost }
    $holder = Read-Lock
    if ($null -eq $holder) {
        $module.Result.msg = 'no lock held'
        return
    }
    $ours = ($holder.owner -eq $owner -and $holder.host -eq $lockHost -and $holder.pid -eq $module.Params.lock_pid)
    if (-not $ours -and -not $module.Params.force_unlock) {
        $module.Result.lock = $holder
        $module.FailJson("deploy lock $LockPath is held by $(Format-Holder $holder (Get-Epoch)), not by $owner@$lockHost; " +
            'only its holder releases it. If that deploy is dead, re-run with -e force_unlock=true')
    }
    $module.Result.changed = $true
    $module.Result.lock = $holder
    $module.Result.forced = (-not $ours)
    if (-not $module.CheckMode) {
        Remove-Item -LiteralPath $LockPath -Force -ErrorAction SilentlyContinue
        if ($ours -and -not $module.Params.record) { return }
        $outcome = if ($ours) { 'released' } else { 'forced' }
        $module.Result.ledger_entry = Write-Record -Action 'unlock' -Fields @{
            outcome = $outcome; lock_owner = $holder.owner; lock_host = $holder.host; lock_pid = $holder.pid
        }
    }
}

# ---------------------------------------------------------------------------- actions

function Invoke-Create {
    $started = Get-Date
    $version = $module.Params.version
    if ($version -notmatch $VersionPattern) {
        $module.FailJson("version $version is not a valid release version: letters, digits and . _ + ! - " +
            '(starting with a letter or digit, at most 100 characters), e.g. 1.4.2')
    }
    $wheelhouse = $module.Params.wheelhouse
    if (-not (Test-Path -LiteralPath $wheelhouse -PathType Container)) {
        $module.FailJson("wheelhouse $wheelhouse is not a directory on the host: copy the release's wheelhouse " +
            '(the app wheel and its dependency wheels for this Python) there first')
    }
    $python = $module.Params.python
    if (-not (Test-Path -LiteralPath $python -PathType Leaf)) {
        $module.FailJson("python $python does not exist on the host: set windows_app_python to an installed python.exe")
    }
    $digest = Get-WheelhouseDigest -Wheelhouse $wheelhouse
    $state = Get-State
    foreach ($rid in ($state.order[($state.order.Count - 1)..0] | Where-Object { $_ })) {
        $meta = Read-Meta -ReleaseId $rid
        if ((Get-Field $meta 'version') -eq $version -and (Get-Field $meta 'wheelhouse_sha256') -eq $digest) {
            $module.Result.release = $rid
            $module.Result.release_path = Join-Path $ReleasesDir $rid
            $module.Result.version = $version
            $module.Result.wheelhouse_sha256 = $digest
            $module.Result.msg = "release $rid already holds version $version from the same wheelhouse"
            return
        }
    }
    $now = [datetime]::UtcNow
    do {
        $rid = "$version-$(Get-UtcStamp -When $now)"
        $now = $now.AddSeconds(1)
    } while (Test-Path -LiteralPath (Join-Path $ReleasesDir $rid))
    $dest = Join-Path $ReleasesDir $rid
    $module.Result.changed = $true
    $module.Result.release = $rid
    $module.Result.release_path = $dest
    $module.Result.version = $version
    $module.Result.wheelhouse_sha256 = $digest
    $module.Diff.before = "releases\$rid absent`n"
    $module.Diff.after = "releases\$rid ($version, wheelhouse $digest)`n"
    if ($module.CheckMode) { return }
    New-Item -ItemType Directory -Path $dest -Force | Out-Null
    try {
        # The venv is made where it will live: pip's launchers (.exe) carry the absolute path of the venv's python.
        Invoke-Checked -Argv @($python, '-m', 'venv', (Join-Path $dest 'venv')) -What 'python -m venv' | Out-Null
        $venvPython = Join-Path $dest 'venv\Scripts\python.exe'
        Invoke-Checked -What 'offline pip install' -Argv @($venvPython, '-m', 'pip', 'install', '--no-index',
            '--find-links', $wheelhouse, '--disable-pip-version-check', '--no-input',
            "$($module.Params.package)==$version") | Out-Null
        $meta = [ordered]@{
            id = $rid; version = $version; package = $module.Params.package; created = Get-UtcIso -When ([datetime]::UtcNow)
            wheelhouse_sha256 = $digest; python = $python
        }
        # release.json last: a release directory without it is incomplete and never listed.
        [System.IO.File]::WriteAllText((Join-Path $dest 'release.json'), (ConvertTo-Json -InputObject $meta -Depth 3))
    }
    catch {
        Remove-Item -LiteralPath $dest -Recurse -Force -ErrorAction SilentlyContinue
        throw
    }
    $module.Result.ledger_entry = Write-Record -Action 'create' -Fields @{
        version = $version; release = $rid; wheelhouse_sha256 = $digest; outcome = 'created'
        duration_s = [math]::Round(((Get-Date) - $started).TotalSeconds, 3); previous = $state.current
    }
}

function Invoke-Activate {
    $started = Get-Date
    $state = Get-State
    $target = Resolve-Release -State $state
    if ((Get-StatusOf $state.status $target) -eq 'bad' -and -not $module.Params.allow_bad) {
        $module.FailJson("release $target is marked bad in $LedgerPath; choose another release, or mark it good first " +
            '(state=mark outcome=good), or set allow_bad=true')
    }
    Invoke-Switch -State $state -Target $target -Action 'activate' -Started $started
}

function Invoke-Rollback {
    $started = Get-Date
    $state = Get-State
    if ($module.Params.release -or $module.Params.version) {
        $target = Resolve-Release -State $state
        if ((Get-StatusOf $state.status $target) -eq 'bad' -and -not $module.Params.allow_bad) {
            $goods = @($state.order | Where-Object { (Get-StatusOf $state.status $_) -eq 'good' })
            $module.FailJson("release $target is marked bad; roll back to a good one " +
                "($(if ($goods.Count) { $goods -join ', ' } else { 'none is marked good' })) or set allow_bad=true")
        }
    }
    else {
        $target = Get-PreviousGood -Order $state.order -Status $state.status -Current $state.current
        if (-not $target) {
            $listing = @($state.order | ForEach-Object { "$_ ($(Get-StatusOf $state.status $_))" }) -join ', '
            $module.FailJson("no good release to roll back to before $(if ($state.current) { $state.current } else { 'nothing (no current release)' }); " +
                "releases: $(if ($listing) { $listing } else { 'none' }). Name one with -e rollback_to=<release>, or mark one good (state=mark outcome=good)")
        }
    }
    Invoke-Switch -State $state -Target $target -Action 'rollback' -Started $started
}

function Invoke-Mark {
    $state = Get-State
    if ($module.Params.release -or $module.Params.version) { $target = Resolve-Release -State $state }
    elseif ($state.current) { $target = $state.current }
    else { $module.FailJson('nothing is current; give release= to mark') }
    $outcome = $module.Params.outcome
    $before = if ($state.status.ContainsKey($target)) { $state.status[$target] } else { @('unknown', $null) }
    $changed = ($before[0] -ne $outcome) -or ($null -ne $module.Params.reason -and $before[1] -ne $module.Params.reason)
    $module.Result.changed = $changed
    $module.Result.release = $target
    $module.Result.outcome = $outcome
    $module.Result.previous_status = $before[0]
    $module.Diff.before = "${target}: $($before[0])`n"
    $module.Diff.after = "${target}: $outcome`n"
    if ($changed -and -not $module.CheckMode) {
        $meta = Read-Meta -ReleaseId $target
        $module.Result.ledger_entry = Write-Record -Action 'mark' -Fields @{
            version = Get-Field $meta 'version'; release = $target; wheelhouse_sha256 = Get-Field $meta 'wheelhouse_sha256'
            outcome = $outcome; reason = $module.Params.reason; previous = $state.current
        }
    }
}

function Invoke-Prune {
    $keep = $module.Params.keep
    if ($keep -lt 1) { $module.FailJson("keep=${keep}: keep at least 1 release") }
    $state = Get-State
    $order = $state.order
    $protected = @($state.current, (Get-LastGood -Order $order -Status $state.status),
        (Get-PreviousGood -Order $order -Status $state.status -Current $state.current)) | Where-Object { $_ }
    $newest = @($order | Select-Object -Last $keep)
    $removed = @($order | Where-Object { $newest -notcontains $_ -and $protected -notcontains $_ })
    $module.Result.kept = @($order | Where-Object { $removed -notcontains $_ })
    $module.Result.removed = $removed
    $module.Result.changed = ($removed.Count -gt 0)
    if ($removed.Count -and -not $module.CheckMode) {
        foreach ($rid in $removed) {
            $path = Join-Path $ReleasesDir $rid
            # Renamed out of the way first: an interrupted removal never leaves a half tree under a release's name.
            $trash = Join-Path $ReleasesDir ".trash-$rid-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
            Move-Item -LiteralPath $path -Destination $trash
            Remove-Item -LiteralPath $trash -Recurse -Force
        }
        $module.Result.ledger_entry = Write-Record -Action 'prune' -Fields @{
            outcome = 'pruned'; reason = "removed $($removed -join ', ')"; previous = $state.current
        }
    }
}

function Invoke-List {
    $read = Read-Ledger
    $state = Get-State
    $module.Result.current = $state.current
    $module.Result.ledger_unreadable_lines = $read.bad
    $module.Result.releases = @(foreach ($rid in $state.order) {
            $meta = Read-Meta -ReleaseId $rid
            @{
                id = $rid; version = Get-Field $meta 'version'; created = Get-Field $meta 'created'
                status = Get-StatusOf $state.status $rid; wheelhouse_sha256 = Get-Field $meta 'wheelhouse_sha256'
                python = Get-Field $meta 'python'; current = ($rid -eq $state.current)
            }
        })
    $module.Result.last_good = Get-LastGood -Order $state.order -Status $state.status
    $module.Result.previous_good = Get-PreviousGood -Order $state.order -Status $state.status -Current $state.current
}

$module.Result.changed = $false
switch ($module.Params.state) {
    'create' { Invoke-Create }
    'activate' { Invoke-Activate }
    'rollback' { Invoke-Rollback }
    'mark' { Invoke-Mark }
    'prune' { Invoke-Prune }
    'list' { Invoke-List }
    'lock' { Invoke-Lock }
    'unlock' { Invoke-Unlock }
}
$module.ExitJson()
