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
PLAYBOOK := ansible-playbook -i inventory/lab
SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help bootstrap venv docker servers check lint unit test molecule lab-image lab-up lab-down lab-status \
        demo site deploy verify bench clean

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

unit: venv servers ## pytest unit tests (plugins, reference app, tools)
	scripts/run_pytest.sh tests/unit

check: venv servers ## the fast loop: lint and unit side by side (< 3 minutes); lint's output follows the tests'
	@mkdir -p .cache; lint_log=$$(mktemp .cache/check-lint.XXXXXX); \
	$(MAKE) --no-print-directory lint > "$$lint_log" 2>&1 & lint_pid=$$!; \
	unit_rc=0; $(MAKE) --no-print-directory unit || unit_rc=$$?; \
	lint_rc=0; wait $$lint_pid || lint_rc=$$?; \
	echo "=== make lint"; cat "$$lint_log"; rm -f "$$lint_log"; \
	echo "=== check: lint exit $$lint_rc, unit exit $$unit_rc"; \
	[ "$$lint_rc" = 0 ] && [ "$$unit_rc" = 0 ]

lab-image: docker ## build the lab image (cached by recipe hash)
	scripts/lab.sh image

lab-up: lab-image ## start lb1 app1 app2 db1 mon1 (no-op when up)
	scripts/lab.sh up

lab-down: ## remove every lab container and network
	scripts/lab.sh down

lab-status: ## list the lab containers
	scripts/lab.sh status

molecule: bootstrap lab-image ## every molecule scenario
	@[ -n "$(SCENARIOS)" ] || { echo "no molecule scenario found" >&2; exit 1; }
	@total=0; summary=""; \
	for s in $(SCENARIOS); do \
	  echo "=== molecule test -s $$s"; start=$$(date +%s); \
	  rc=0; molecule test -s $$s || rc=$$?; \
	  took=$$(( $$(date +%s) - start )); total=$$(( total + took )); \
	  if [ "$$rc" != 0 ]; then \
	    echo "=== molecule test -s $$s: FAILED (exit $$rc) after $$took s"; \
	    echo "=== molecule summary:$$summary $$s=FAILED($${took}s); total $$total s"; exit 1; \
	  fi; \
	  echo "=== molecule test -s $$s: passed in $$took s"; summary="$$summary $$s=$${took}s"; \
	done; \
	echo "=== molecule summary: $(words $(SCENARIOS)) scenarios passed in $$total s:$$summary"

test: check molecule ## everything CI runs: lint, unit, every molecule scenario

site: venv lab-up ## converge every lab host
	$(PLAYBOOK) playbooks/site.yml

deploy: venv lab-up ## deploy app_version (make deploy V=1.0.0)
	$(PLAYBOOK) playbooks/deploy.yml -e app_version=$(or $(V),1.0.0)

verify: venv ## health report of the lab
	$(PLAYBOOK) playbooks/verify.yml

demo: bootstrap lab-up ## fresh machine -> running lab, site, first deploy, health report
	scripts/demo.sh

bench: bootstrap ## benchmarks under tests/bench (print figures)
	tests/bench/run.sh

clean: lab-down ## remove the lab and local caches (keeps .venv)
	rm -rf .cache
