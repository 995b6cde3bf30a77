#!powershell
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Windows twin of app_health: HTTP probes, Windows service state, TCP ports, disk and memory thresholds,
# aggregated to healthy / degraded / unhealthy (the worst check), with the SAME result shape as app_health:
# status, checks (name, kind, status, detail, duration, data), failed_checks, attempts, elapsed.

#AnsibleRequires -CSharpUtil Ansible.Basic

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$limit = { param($warning, $critical) @{ warning = @{ type = 'float'; default = $warning }; critical = @{ type = 'float'; default = $critical } } }
$diskOptions = & $limit 85.0 95.0
$diskOptions.paths = @{ type = 'list'; elements = 'str'; default = @('C:\') }

$spec = @{
    options = @{
        http = @{
            type = 'list'; elements = 'dict'; default = @()
            options = @{
                url = @{ type = 'str'; required = $true }
                name = @{ type = 'str' }
                status = @{ type = 'list'; elements = 'int'; default = @(200) }
                body_contains = @{ type = 'str' }
                json_field = @{ type = 'str' }
                json_value = @{ type = 'raw' }
                timeout = @{ type = 'float' }
                headers = @{ type = 'dict'; no_log = $true }
                method = @{ type = 'str'; default = 'GET'; choices = @('GET', 'HEAD') }
                validate_certs = @{ type = 'bool'; default = $true }
                follow_redirects = @{ type = 'bool'; default = $true }
            }
        }
        services = @{ type = 'list'; elements = 'str'; default = @() }
        tcp = @{ type = 'list'; elements = 'str'; default = @() }
        thresholds = @{
            type = 'dict'
            options = @{
                memory = @{ type = 'dict'; options = (& $limit 85.0 95.0) }
                disk = @{ type = 'dict'; options = $diskOptions }
            }
        }
        timeout = @{ type = 'float'; default = 5.0 }
        retries = @{ type = 'int'; default = 0 }
        delay = @{ type = 'float'; default = 1.0 }
        max_delay = @{ type = 'float'; default = 5.0 }
        deadline = @{ type = 'float'; default = 60.0 }
        min_status = @{ type = 'str'; default = 'healthy'; choices = @('healthy', 'degraded', 'unhealthy') }
    }
    supports_check_mode = $true
}

$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$Rank = @{ healthy = 0; degraded = 1; unhealthy = 2 }

if ($module.Params.retries -lt 0 -or $module.Params.deadline -le 0 -or $module.Params.delay -lt 0) {
    $module.FailJson('retries must be >= 0, deadline > 0 and delay >= 0 (seconds)')
}

function New-Check {
    param([string]$Name, [string]$Kind, [string]$Status, [string]$Detail, [double]$Duration, [hashtable]$Data = @{})
    return [ordered]@{ name = $Name; kind = $Kind; status = $Status; detail = $Detail; duration = [math]::Round($Duration, 3); data = $Data }
}

function Get-RedactedUrl {
    param([string]$Url)
    return ($Url -replace '://[^/@]*@', '://***@')
}

function Get-JsonField {
    param($Document, [string]$Dotted)
    $value = $Document
    foreach ($part in $Dotted.Split('.')) {
        if ($null -eq $value) { throw "no field $Dotted" }
        if ($value -is [System.Array]) { $value = $value[[int]$part]; continue }
        $prop = $value.PSObject.Properties[$part]
        if ($null -eq $prop) { throw "no field $Dotted" }
        $value = $prop.Value
    }
    return $value
}

function Test-Http {
    param($Probe, [double]$Budget)
    $started = Get-Date
    $url = $Probe.url
    $name = if ($Probe.name) { $Probe.name } else { Get-RedactedUrl $url }
    $timeout = if ($null -ne $Probe.timeout) { $Probe.timeout } else { $module.Params.timeout }
    $timeout = [math]::Max(0.1, [math]::Min($timeout, $Budget))
    try {
        $request = [System.Net.HttpWebRequest]::Create($url)
        $request.Method = $Probe.method
        $request.Timeout = [int]($timeout * 1000)
        $request.ReadWriteTimeout = [int]($timeout * 1000)
        $request.AllowAutoRedirect = $Probe.follow_redirects
        $request.Proxy = $null
        if ($Probe.headers) { foreach ($key in $Probe.headers.Keys) { $request.Headers[$key] = [string]$Probe.headers[$key] } }
        if (-not $Probe.validate_certs) { $request.ServerCertificateValidationCallback = { $true } }
        try {
            $response = $request.GetResponse()
        }
        catch [System.Net.WebException] {
            if ($null -eq $_.Exception.Response) { throw }
            $response = $_.Exception.Response
        }
        try {
            $code = [int]$response.StatusCode
            $reader = New-Object System.IO.StreamReader($response.GetResponseStream())
            $body = $reader.ReadToEnd()
        }
        finally {
            $response.Close()
        }
        $data = @{ status = $code }
        if (@($Probe.status) -notcontains $code) {
            return New-Check $name 'http' 'unhealthy' "HTTP $code, expected $(@($Probe.status) -join ', ')" ((Get-Date) - $started).TotalSeconds $data
        }
        if ($Probe.body_contains -and -not $body.Contains($Probe.body_contains)) {
            return New-Check $name 'http' 'unhealthy' "HTTP $code, body does not contain $($Probe.body_contains)" ((Get-Date) - $started).TotalSeconds $data
        }
        if ($Probe.json_field) {
            try {
                $value = Get-JsonField -Document (ConvertFrom-Json -InputObject $body) -Dotted $Probe.json_field
            }
            catch {
                return New-Check $name 'http' 'unhealthy' "HTTP $code, $($Probe.json_field) not found in the JSON body" ((Get-Date) - $started).TotalSeconds $data
            }
            $data.json_value = $value
            if ($null -ne $Probe.json_value -and [string]$value -ne [string]$Probe.json_value) {
                return New-Check $name 'http' 'unhealthy' "HTTP $code, $($Probe.json_field) is $value, expected $($Probe.json_value)" ((Get-Date) - $started).TotalSeconds $data
            }
        }
        return New-Check $name 'http' 'healthy' "HTTP $code" ((Get-Date) - $started).TotalSeconds $data
    }
    catch {
        return New-Check $name 'http' 'unhealthy' "$($_.Exception.GetType().Name): $($_.Exception.Message)" ((Get-Date) - $started).TotalSeconds @{}
    }
}

function Test-Service {
    param([string]$Name)
    $started = Get-Date
    $service = Get-Service -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $service) {
        return New-Check "service:$Name" 'service' 'unhealthy' 'service not installed' ((Get-Date) - $started).TotalSeconds @{}
    }
    $state = [string]$service.Status
    $data = @{ state = $state; start_type = [string]$service.StartType }
    $status = if ($state -eq 'Running') { 'healthy' } else { 'unhealthy' }
    return New-Check "service:$Name" 'service' $status $state ((Get-Date) - $started).TotalSeconds $data
}

function Test-Tcp {
    param([string]$Target, [double]$Budget)
    $started = Get-Date
    if ($Target -notmatch '^(\[(?<h6>[^\]]+)\]|(?<h>[^:]+)):(?<p>\d{1,5})$') {
        $module.FailJson("tcp entry $Target is not host:port (or [v6]:port)")
    }
    $hostName = if ($Matches['h6']) { $Matches['h6'] } else { $Matches['h'] }
    $port = [int]$Matches['p']
    $client = New-Object System.Net.Sockets.TcpClient
    try {
        $wait = $client.BeginConnect($hostName, $port, $null, $null)
        $timeout = [math]::Max(0.1, [math]::Min($module.Params.timeout, $Budget))
        if (-not $wait.AsyncWaitHandle.WaitOne([int]($timeout * 1000)) -or -not $client.Connected) {
            return New-Check "tcp:$Target" 'tcp' 'unhealthy' "no connection within $timeout s" ((Get-Date) - $started).TotalSeconds @{}
        }
        $client.EndConnect($wait)
        return New-Check "tcp:$Target" 'tcp' 'healthy' 'connected' ((Get-Date) - $started).TotalSeconds @{}
    }
    catch {
        return New-Check "tcp:$Target" 'tcp' 'unhealthy' $_.Exception.Message ((Get-Date) - $started).TotalSeconds @{}
    }
    finally {
        $client.Close()
    }
}

function Get-ThresholdStatus {
    param([double]$Value, [double]$Warning, [double]$Critical)
    if ($Value -gt $Critical) { return 'unhealthy' }
    if ($Value -gt $Warning) { return 'degraded' }
    return 'healthy'
}

function Test-Threshold {
    param([string]$Name, [string]$Kind, [scriptblock]$Measure, $Limits)
    $started = Get-Date
    $warning = [double]$Limits.warning
    $critical = [double]$Limits.critical
    if (-not (0 -le $warning -and $warning -le $critical -and $critical -le 100)) {
        $module.FailJson("could not check: thresholds.${Kind}: need 0 <= warning ($warning) <= critical ($critical) <= 100")
    }
    try {
        $value = [math]::Round([double](& $Measure), 1)
    }
    catch {
        return New-Check $Name $Kind 'unhealthy' "cannot measure: $($_.Exception.Message)" ((Get-Date) - $started).TotalSeconds @{}
    }
    $status = Get-ThresholdStatus -Value $value -Warning $warning -Critical $critical
    $detail = "$value % used (warning > $warning, critical > $critical)"
    return New-Check $Name $Kind $status $detail ((Get-Date) - $started).TotalSeconds @{ percent = $value; warning = $warning; critical = $critical }
}

function Invoke-Checks {
    param([double]$Budget)
    $checks = New-Object System.Collections.ArrayList
    foreach ($probe in $module.Params.http) { [void]$checks.Add((Test-Http -Probe $probe -Budget $Budget)) }
    foreach ($name in $module.Params.services) { [void]$checks.Add((Test-Service -Name $name)) }
    foreach ($target in $module.Params.tcp) { [void]$checks.Add((Test-Tcp -Target $target -Budget $Budget)) }
    $thresholds = $module.Params.thresholds
    if ($null -ne $thresholds) {
        if ($null -ne $thresholds.memory) {
            [void]$checks.Add((Test-Threshold -Name 'memory' -Kind 'memory' -Limits $thresholds.memory -Measure {
                        $os = Get-CimInstance -ClassName Win32_OperatingSystem
                        100.0 * (1 - $os.FreePhysicalMemory / $os.TotalVisibleMemorySize)
                    }))
        }
        if ($null -ne $thresholds.disk) {
            foreach ($path in $thresholds.disk.paths) {
                [void]$checks.Add((Test-Threshold -Name "disk:$path" -Kind 'disk' -Limits $thresholds.disk -Measure {
                            $drive = New-Object System.IO.DriveInfo($path)
                            100.0 * ($drive.TotalSize - $drive.AvailableFreeSpace) / [math]::Max($drive.TotalSize, 1)
                        }.GetNewClosure()))
            }
        }
    }
    return , $checks
}

$start = Get-Date
$attempts = 0
$pause = $module.Params.delay
while ($true) {
    $attempts += 1
    $left = $module.Params.deadline - ((Get-Date) - $start).TotalSeconds
    $checks = Invoke-Checks -Budget ([math]::Max($left, 0.1))
    $status = 'healthy'
    foreach ($check in $checks) { if ($Rank[$check.status] -gt $Rank[$status]) { $status = $check.status } }
    $left = $module.Params.deadline - ((Get-Date) - $start).TotalSeconds
    if ($Rank[$status] -le $Rank[$module.Params.min_status] -or $attempts -gt $module.Params.retries -or $left -le 0) { break }
    Start-Sleep -Milliseconds ([int](1000 * [math]::Min($pause, $left)))
    $pause = [math]::Min($pause * 2, $module.Params.max_delay)
}

$failing = @($checks | Where-Object { $_.status -ne 'healthy' })
$module.Result.changed = $false
$module.Result.status = $status
$module.Result.checks = @($checks)
$module.Result.attempts = $attempts
$module.Result.elapsed = [math]::Round(((Get-Date) - $start).TotalSeconds, 3)
$module.Result.failed_checks = @($failing | ForEach-Object { $_.name })
if ($Rank[$status] -gt $Rank[$module.Params.min_status]) {
    $text = @($failing | ForEach-Object { "$($_.name) [$($_.status)] $($_.detail)" }) -join '; '
    $module.FailJson("health is $status, worse than min_status=$($module.Params.min_status), after $attempts attempt(s) in " +
        "$($module.Result.elapsed) s; failing: $text")
}
$module.ExitJson()
