<#
.SYNOPSIS
    Prepare a Windows host once so that Ansible can manage it: WinRM over HTTPS (for the psrp or
    winrm connection) or the OpenSSH server (for the ssh connection).

.DESCRIPTION
    Run once on the target, in an elevated PowerShell (5.1 or 7):

        powershell -ExecutionPolicy Bypass -File setup-ansible-host.ps1 -ControllerAddress 192.0.2.5
        powershell -ExecutionPolicy Bypass -File setup-ansible-host.ps1 -Transport SSH -ControllerAddress 192.0.2.5

    WinRM (default):
      - an HTTPS listener on 5986 with the certificate given by -CertificateThumbprint (from your
        PKI, recommended) or a new self-signed one (exported to -ExportCertificatePath so that the
        controller can trust it: ansible_psrp_ca_cert);
      - Basic authentication and unencrypted traffic OFF, CredSSP OFF (Negotiate/Kerberos only);
      - the HTTP listener (5985) removed; a firewall rule for 5986 from -ControllerAddress only.
    SSH:
      - the OpenSSH.Server capability, sshd running and automatic, PowerShell as its default shell;
      - a firewall rule for 22 from -ControllerAddress only.
    It changes nothing that is already as wanted, and prints what it did. -WhatIf shows what it would do.

    Exit codes: 0 done; 1 not elevated or a step failed (the message names it).

.PARAMETER Transport
    WinRM (default) or SSH.
.PARAMETER ControllerAddress
    Address or CIDR of the Ansible controller: the only source allowed through the firewall.
.PARAMETER CertificateThumbprint
    Thumbprint of a certificate in Cert:\LocalMachine\My for the HTTPS listener; empty: a self-signed one.
.PARAMETER ExportCertificatePath
    Where the self-signed certificate is exported (PEM) for the controller.
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [ValidateSet('WinRM', 'SSH')]
    [string]$Transport = 'WinRM',
    [Parameter(Mandatory = $true)]
    [string]$ControllerAddress,
    [string]$CertificateThumbprint = '',
    [string]$ExportCertificatePath = "$env:USERPROFILE\ansible-winrm-ca.pem"
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Write-Step {
    param([string]$Message)
    Write-Host "setup-ansible-host: $Message"
}

function Assert-Elevated {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'run this script in an elevated PowerShell (Run as Administrator)'
    }
}

function Set-FirewallRule {
    param([string]$Name, [int]$Port)
    $rule = Get-NetFirewallRule -Name $Name -ErrorAction SilentlyContinue
    if ($null -ne $rule) {
        if ($PSCmdlet.ShouldProcess($Name, "limit to $ControllerAddress")) {
            Set-NetFirewallRule -Name $Name -RemoteAddress $ControllerAddress -LocalPort $Port -Protocol TCP -Enabled True
        }
        return
    }
    if ($PSCmdlet.ShouldProcess($Name, "allow TCP $Port from $ControllerAddress")) {
        New-NetFirewallRule -Name $Name -DisplayName "Ansible ($Name)" -Direction Inbound -Action Allow -Protocol TCP `
            -LocalPort $Port -RemoteAddress $ControllerAddress -Profile @('Domain', 'Private') | Out-Null
        Write-Step "firewall: TCP $Port open to $ControllerAddress only"
    }
}

function Enable-WinRMHttps {
    if ($PSCmdlet.ShouldProcess('WinRM', 'enable the service')) {
        Set-Service -Name WinRM -StartupType Automatic
        Start-Service -Name WinRM
    }
    if ($CertificateThumbprint) {
        $cert = Get-Item -LiteralPath "Cert:\LocalMachine\My\$CertificateThumbprint"
    }
    else {
        $fqdn = [System.Net.Dns]::GetHostEntry('localhost').HostName
        $cert = Get-ChildItem Cert:\LocalMachine\My | Where-Object { $_.Subject -eq "CN=$fqdn" -and $_.NotAfter -gt (Get-Date).AddDays(30) } |
            Sort-Object NotAfter -Descending | Select-Object -First 1
        if ($null -eq $cert -and $PSCmdlet.ShouldProcess("CN=$fqdn", 'create a self-signed certificate')) {
            $cert = New-SelfSignedCertificate -DnsName $fqdn, $env:COMPUTERNAME -CertStoreLocation Cert:\LocalMachine\My `
                -KeyExportPolicy NonExportable -NotAfter (Get-Date).AddYears(3)
            Write-Step "created self-signed certificate $($cert.Thumbprint) for $fqdn"
        }
        if ($null -ne $cert -and $PSCmdlet.ShouldProcess($ExportCertificatePath, 'export the certificate (PEM)')) {
            $pem = "-----BEGIN CERTIFICATE-----`n" +
                [Convert]::ToBase64String($cert.RawData, 'InsertLineBreaks') + "`n-----END CERTIFICATE-----`n"
            [System.IO.File]::WriteAllText($ExportCertificatePath, $pem)
            Write-Step "certificate exported to $ExportCertificatePath: copy it to the controller (ansible_psrp_ca_cert)"
        }
    }
    $listeners = @(Get-ChildItem WSMan:\localhost\Listener)
    $https = $listeners | Where-Object { $_.Keys -contains 'Transport=HTTPS' }
    if ($null -eq $https -and $null -ne $cert -and $PSCmdlet.ShouldProcess('WinRM', 'add the HTTPS listener on 5986')) {
        New-Item -Path WSMan:\localhost\Listener -Transport HTTPS -Address * -CertificateThumbPrint $cert.Thumbprint -Force | Out-Null
        Write-Step "HTTPS listener on 5986 with certificate $($cert.Thumbprint)"
    }
    foreach ($http in @($listeners | Where-Object { $_.Keys -contains 'Transport=HTTP' })) {
        if ($PSCmdlet.ShouldProcess($http.Name, 'remove the unencrypted HTTP listener')) {
            Remove-Item -Path "WSMan:\localhost\Listener\$($http.Name)" -Recurse -Force
            Write-Step 'HTTP listener (5985) removed'
        }
    }
    if ($PSCmdlet.ShouldProcess('WinRM', 'Basic auth off, unencrypted off, CredSSP off')) {
        Set-Item -Path WSMan:\localhost\Service\Auth\Basic -Value $false
        Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $false
        Set-Item -Path WSMan:\localhost\Service\Auth\CredSSP -Value $false
    }
    Set-FirewallRule -Name 'tradeops-ansible-winrm-https' -Port 5986
}

function Enable-OpenSsh {
    $capability = Get-WindowsCapability -Online -Name 'OpenSSH.Server*' | Select-Object -First 1
    if ($null -eq $capability) { throw 'the OpenSSH.Server capability is not available on this Windows build' }
    if ($capability.State -ne 'Installed' -and $PSCmdlet.ShouldProcess($capability.Name, 'install')) {
        Add-WindowsCapability -Online -Name $capability.Name | Out-Null
        Write-Step "installed $($capability.Name)"
    }
    if ($PSCmdlet.ShouldProcess('sshd', 'automatic start, PowerShell as default shell')) {
        Set-Service -Name sshd -StartupType Automatic
        Start-Service -Name sshd
        $shell = (Get-Command powershell.exe).Source
        New-ItemProperty -Path 'HKLM:\SOFTWARE\OpenSSH' -Name DefaultShell -Value $shell -PropertyType String -Force | Out-Null
        Write-Step "sshd running, default shell $shell"
    }
    Set-FirewallRule -Name 'tradeops-ansible-ssh' -Port 22
}

try {
    Assert-Elevated
    if ($Transport -eq 'WinRM') { Enable-WinRMHttps } else { Enable-OpenSsh }
    Write-Step "done ($Transport). Test from the controller: ansible -i <inventory> windows -m ansible.windows.win_ping"
    exit 0
}
catch {
    Write-Error "setup-ansible-host: $($_.Exception.Message)" -ErrorAction Continue
    exit 1
}
