# tradeops — see README.md. Every target bootstraps what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_INJECT_FACT_VARS := false
export ANSIBLE_FORCE_COLOR := $(if $(CI),0,1)
export PY_COLORS := $(if $(CI),0,1)
STAMP := $(VENV)/.tradeops-stamp
# TRADEOPS_MITOGEN=1: under Mitogen for Ansible (scripts/with_mitogen.sh; opt-in for the lab).
PLAYBOOK := scripts/with_mitogen.sh ansible-playbook -i inventory/lab
SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
# molecule/windows needs a real Windows host (molecule/windows/README.md): run only with TRADEOPS_WINDOWS_HOST set.
SCENARIOS := $(if $(TRADEOPS_WINDOWS_HOST),$(SCENARIOS),$(filter-out windows,$(SCENARIOS)))
# Scenarios run side by side (each has its own containers and network): 2 on this 2-core machine.
MOLECULE_JOBS ?= 2

.PHONY: help bootstrap venv docker servers check lint unit test molecule lab-image lab-images lab-up lab-down lab-status \
        demo site deploy verify bench chaos results clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.yml scripts/bootstrap.sh
	scripts/bootstrap.sh venv

venv: $(STAMP) ## the controller's Python tooling in .venv

docker: ## a running Docker engine (installs docker.io when root on Debian)
	scripts/bootstrap.sh docker

bootstrap: venv docker ## venv + Docker engine

lint: venv ## yamllint, ansible-lint (production profile), ruff, argument specs, secret scanner (in parallel)
	@$(MAKE) --no-print-directory -j$(LINT_JOBS) --output-sync=target $(LINTERS)

# The linters are independent: ansible-lint (the long one, ~1 core) runs beside the others.
LINTERS := lint-yaml lint-python lint-specs lint-secrets lint-ansible
LINT_JOBS ?= $(words $(LINTERS))
.PHONY: $(LINTERS)
lint-yaml:
	yamllint --strict .
lint-python:
	ruff check .
lint-specs:
	scripts/check_argument_specs.py
lint-secrets: ## detect-secrets over every file git lists, against the audited .secrets.baseline
	scripts/check_secrets.py
lint-ansible:
	scripts/check_ansible.py --profile production

servers: ## PostgreSQL/Redis binaries for the unit tests (installs them when root on Debian)
	scripts/bootstrap.sh servers

unit: venv servers ## pytest unit tests (plugins, reference app, tools) and the hostile-input regressions
	scripts/run_pytest.sh tests/unit tests/security/hostile

check: venv servers ## the fast loop: lint and unit side by side (< 3 minutes); lint's output follows the tests'
	@mkdir -p .cache; t0=$$(date +%s); lint_log=$$(mktemp .cache/check-lint.XXXXXX); \
	$(MAKE) --no-print-directory lint > "$$lint_log" 2>&1 & lint_pid=$$!; \
	unit_rc=0; $(MAKE) --no-print-directory unit || unit_rc=$$?; \
	lint_rc=0; wait $$lint_pid || lint_rc=$$?; \
	echo "=== make lint"; cat "$$lint_log"; rm -f "$$lint_log"; \
	echo "=== check: lint exit $$lint_rc, unit exit $$unit_rc, $$(( $$(date +%s) - t0 )) s"; \
	[ "$$lint_rc" = 0 ] && [ "$$unit_rc" = 0 ]

lab-image: docker ## build the lab image (cached by recipe hash)
	scripts/lab.sh image

lab-up: lab-image ## start lb1 app1 app2 db1 mon1 (no-op when up)
	scripts/lab.sh up

lab-down: ## remove every lab container and network
	scripts/lab.sh down

lab-status: ## list the lab containers
	scripts/lab.sh status

# Every image a scenario names (molecule/*/molecule.yml platforms' image: debian12 when none).
LAB_IMAGES := $(sort debian12 $(shell sed -n 's/^ *image: *//p' molecule/*/molecule.yml))
lab-images: docker ## build every lab image the molecule scenarios use (cached by recipe hash)
	scripts/lab.sh image $(LAB_IMAGES)

molecule: bootstrap lab-images ## every molecule scenario, MOLECULE_JOBS at a time, with each one's time
	@[ -n "$(TRADEOPS_WINDOWS_HOST)" ] || echo "=== molecule test -s windows SKIPPED: no Windows host (set TRADEOPS_WINDOWS_HOST/_USER/_PASSWORD/_ASSETS, see molecule/windows/README.md); not run, not counted as passed"
	MOLECULE_JOBS=$(MOLECULE_JOBS) scripts/run_molecule.sh $(SCENARIOS)

test: venv ## everything CI runs: lint, unit, every molecule scenario (the lab images build beside make check)
	@mkdir -p .cache; t0=$$(date +%s); img_log=$$(mktemp .cache/lab-images.XXXXXX); \
	$(MAKE) --no-print-directory lab-images > "$$img_log" 2>&1 & img_pid=$$!; \
	check_rc=0; $(MAKE) --no-print-directory check || check_rc=$$?; \
	img_rc=0; wait $$img_pid || img_rc=$$?; \
	echo "=== make lab-images (beside make check)"; cat "$$img_log"; rm -f "$$img_log"; \
	echo "=== check and lab images: $$(( $$(date +%s) - t0 )) s"; \
	[ "$$check_rc" = 0 ] && [ "$$img_rc" = 0 ]
	@$(MAKE) --no-print-directory molecule

site: venv lab-up ## converge every lab host (playbooks/lab.yml: site.yml and the lab S3)
	$(PLAYBOOK) playbooks/lab.yml

deploy: venv lab-up ## deploy app_version (make deploy V=1.0.0)
	$(PLAYBOOK) playbooks/deploy.yml -e app_version=$(or $(V),1.0.0)

verify: venv ## health report of the lab
	$(PLAYBOOK) playbooks/verify.yml

demo: bootstrap lab-up ## fresh machine -> running lab, site, first deploy, health report
	scripts/demo.sh

bench: bootstrap ## benchmarks under tests/bench (print figures)
	tests/bench/run.sh

chaos: bootstrap lab-image ## chaos suite tests/chaos on its own lab (LAB_ID=chaos; CHAOS_KEEP=1 keeps it); ends "chaos: N passed, N failed"
	python -m pytest -p no:cacheprovider -v tests/chaos

results: venv ## docs/results.md from the figures the benchmarks, the chaos suite and the security gate wrote
	scripts/results.py

clean: lab-down ## remove the lab and local caches (keeps .venv)
	rm -rf .cache
