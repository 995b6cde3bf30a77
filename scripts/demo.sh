#!/usr/bin/env bash
# make demo: the lab is up (make bootstrap lab-up ran first); converge it, deploy
# the reference app, print the health report, what runs where and how to reach it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PB="ansible-playbook -i inventory/lab"
VERSION=${DEMO_VERSION:-1.0.0}

step() { printf '\n=== %s\n' "$*"; }

step "lab.yml: converge every host (site.yml, then the lab S3)"
$PB playbooks/lab.yml

step "deploy.yml: reference app $VERSION, health-gated, one host at a time"
$PB playbooks/deploy.yml -e "app_version=$VERSION"

step "verify.yml: health report of every host and service"
$PB playbooks/verify.yml

step "what runs where"
for h in app1 app2; do
  printf '%s serves: ' "$h"
  docker exec "tradeops-$h" python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/api/version', timeout=5).read().decode())"
done
cat <<'TXT'
Running now (lab.yml converged every host; deploy.yml released the app):
  lb1    nginx load balancer in front of app1 and app2: TLS with a self-signed certificate,
         HTTP redirected to HTTPS, a host drained during its deploy
  app1   the reference app (version above), supervised by systemd, health-gated releases,
  app2   maintenance timers; each keeps a ledger of its deploys in /opt/refapp/ledger.jsonl
  db1    PostgreSQL and Redis for the app; scheduled backups, verified by a scratch
         restore and uploaded to the lab's S3 endpoint on mon1
  mon1   Prometheus, Alertmanager and blackbox probes; the lab's S3 endpoint (moto)
  every host: the ops agent (tradeops-health, tradeops-release, tradeops-backup),
         Prometheus exporters and a firewall
TXT
scripts/lab.sh status
ansible-inventory -i inventory/lab --graph
cat <<'TXT'

How to reach it (ports published on 127.0.0.1 by `make lab-up`):
  curl -k https://127.0.0.1:8443/api/version              the load balancer (lb1's 443), answered by app1 or app2
  curl -k https://127.0.0.1:8443/api/health/readiness     readiness through the load balancer
                                                          (-k: the lab's certificate is self-signed)
  curl -I http://127.0.0.1:8080/                          lb1's port 80: a 301 to https on port 443,
                                                          which this machine reaches as 8443
  curl http://127.0.0.1:8001/api/health/readiness         app1 directly (app2: port 8002; also
                                                          /api/version, /api/health/liveness, /metrics)
  http://127.0.0.1:9090/                                  Prometheus on mon1 (targets, alerts)
  http://127.0.0.1:9093/                                  Alertmanager on mon1
  ansible -i inventory/lab all -m ansible.builtin.ping    every host, through the Docker engine
  docker exec -it tradeops-app1 bash                      a shell on a lab host (systemd is PID 1)

Try next:
  ansible-playbook -i inventory/lab playbooks/deploy.yml -e app_version=1.1.0 --check   what a deploy would change (nothing changes)
  ansible-playbook -i inventory/lab playbooks/deploy.yml -e app_version=1.1.0           a new version, one host at a time, health-gated
  ansible-playbook -i inventory/lab playbooks/rollback.yml                              back to the previous good release, verified
  ansible-playbook -i inventory/lab playbooks/backup.yml                                back up now, offsite, verified by scratch restore
  ansible-playbook -i inventory/lab playbooks/restore.yml -e confirm_restore=true       restore the newest verified backup onto db1
                                                          (stops the app meanwhile; without confirm_restore it only
                                                          says what it would restore)
  ansible-playbook -i inventory/lab playbooks/verify.yml                                the health report again
  make lab-down                                           remove every lab container and network
TXT
