# Everything installs itself: a fresh clone needs only Rust, Python 3 and access
# to the package registries (crates.io, PyPI). Tools live in .venv and .tools/.

PYTHON      ?= python3
ARCH        ?= x86_64
VENV        := .venv
TOOLS       := .tools
MOTO_PYTHON := $(abspath $(VENV))/bin/python
# The emulator, its IAM reference (policy_sentry), the demo's DNS responder and the packaging
# test's YAML (cfn-flip); the stamp's name changes with the pins, so a new pin reinstalls.
PY_PINS     := moto[server]==5.2.5 dnslib==0.9.26 policy_sentry==0.15.2 cfn-flip==1.3.0
VENV_READY  := $(VENV)/.ready-moto-5.2.5-dnslib-0.9.26-policy_sentry-0.15.2-cfn-flip-1.3.0
LINT_PY     := $(TOOLS)/lint/bin/python
LINT_PINS   := cfn-lint==1.58.0 cfn-flip==1.3.0 policy_sentry==0.15.2 parliament==1.6.4
# The stamp's name changes with the pins, so a new pin reinstalls.
LINT_READY  := $(TOOLS)/lint/.ready-cfn-lint-1.58.0-policy_sentry-0.15.2-parliament-1.6.4
CHECKOV     := $(TOOLS)/checkov/bin/checkov
CARGO_DENY  := $(TOOLS)/cargo/bin/cargo-deny
BUILD_BIN   := $(abspath $(TOOLS))/build/bin
SAM         := $(TOOLS)/sam/bin/sam
ZIP         := target/lambda/reverse-privatelink/bootstrap.zip
STACKSET_TEMPLATE := dist/reverse-privatelink.yaml
CARGO_LAMBDA_ARCH_x86_64 := --x86-64
CARGO_LAMBDA_ARCH_arm64  := --arm64

.PHONY: demo test reliability soak bench build package deploy lint

## demo: run the Lambda binary against moto server: Create, Update, Delete (no AWS account)
demo: $(VENV_READY)
	cargo build --locked
	$(VENV)/bin/python scripts/demo.py --binary target/debug/reverse-privatelink

## test: all tests (the emulator's IAM evaluator and the policies' quotas; Rust unit, moto integration, protocol, binary through a Runtime API)
test: $(VENV_READY)
	cd scripts && $(MOTO_PYTHON) -m unittest discover --start-directory . --top-level-directory . --pattern 'test_*.py'
	MOTO_PYTHON=$(MOTO_PYTHON) cargo test --locked

## reliability: the fault, crash, deadline and bad-input tests, printing the figures they produce
reliability: $(VENV_READY)
	MOTO_PYTHON=$(MOTO_PYTHON) cargo test --locked --test integration reliability:: -- --nocapture 2>&1 \
		| tee target/reliability.log | grep -E '^(reliability:|test result)'
	@grep -q '^test result: ok' target/reliability.log

## soak: randomized CloudFormation histories with faults; SEED=N replays one (printing its history), SEEDS=N runs seeds 1 (or FIRST) to N
soak: $(VENV_READY)
	@test -n "$(SEED)$(SEEDS)" || { echo "make soak SEED=N (one seed) or SEEDS=N [FIRST=M] (seeds 1 or M to N)"; exit 2; }
	SOAK_SEED=$(SEED) SOAK_SEEDS=$(SEEDS) SOAK_FIRST=$(FIRST) MOTO_PYTHON=$(MOTO_PYTHON) \
		cargo test --locked --test integration soak::chosen -- --ignored --nocapture --exact

## bench: speed, calls and memory of the release binary against moto, each beside its budget (non-zero exit when one is missed)
bench: $(VENV_READY)
	cargo build --release --locked
	$(VENV)/bin/python scripts/bench.py --binary target/release/reverse-privatelink

## build: release bootstrap.zip with cargo-lambda (ARCH=x86_64 or arm64)
build: $(BUILD_BIN)/cargo-lambda
	PATH=$(BUILD_BIN):$$PATH cargo lambda build --release --locked $(CARGO_LAMBDA_ARCH_$(ARCH)) --output-format zip
	@echo "built $(ZIP) for $(ARCH)"

## package: bootstrap.zip plus the StackSets/console template pointing at CodeS3Bucket/CodeS3Key, in dist/
package: build $(STACKSET_TEMPLATE)
	cp $(ZIP) dist/bootstrap.zip
	@echo "dist/bootstrap.zip: upload to s3://<bucket-prefix>-<region>/reverse-privatelink/bootstrap.zip in each region"
	@echo "$(STACKSET_TEMPLATE): the template for StackSets and the console's Launch stack"

## deploy: sam build && sam deploy --guided into the current AWS account
deploy: $(SAM) $(BUILD_BIN)/cargo-lambda
	PATH=$(BUILD_BIN):$$PATH SAM_CLI_TELEMETRY=0 $(SAM) build --parameter-overrides Architecture=$(ARCH)
	SAM_CLI_TELEMETRY=0 $(SAM) deploy --guided --capabilities CAPABILITY_IAM
	@echo "deployed; the stack's Outputs hold ServiceName and AvailabilityZoneIds for the consumer"

## lint: cfn-lint, checkov (template.yaml, the packaged template, fleet.yaml), the IAM policies against the Service Authorization Reference and parliament, fmt, clippy, cargo-deny
lint: $(STACKSET_TEMPLATE) $(LINT_READY) $(CHECKOV) $(CARGO_DENY)
	$(TOOLS)/lint/bin/cfn-lint template.yaml $(STACKSET_TEMPLATE) fleet.yaml
	$(CHECKOV) --framework cloudformation --skip-download --quiet --compact -f template.yaml -f $(STACKSET_TEMPLATE) -f fleet.yaml
	$(LINT_PY) scripts/check_iam.py template.yaml
	$(LINT_PY) scripts/check_iam.py --resource-policies fleet.yaml
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	$(CARGO_DENY) check bans licenses sources
	@echo "lint clean: template.yaml, $(STACKSET_TEMPLATE), fleet.yaml, IAM policies, Rust formatting, clippy, dependencies"

$(STACKSET_TEMPLATE): template.yaml scripts/package.py $(LINT_READY)
	$(LINT_PY) scripts/package.py --source template.yaml --output $@

$(VENV_READY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(foreach pin,$(PY_PINS),'$(pin)')
	touch $@

$(LINT_READY):
	$(PYTHON) -m venv $(TOOLS)/lint
	$(TOOLS)/lint/bin/pip install --quiet --disable-pip-version-check $(LINT_PINS)
	touch $@

# checkov pins an older policy_sentry, hence its own venv.
$(CHECKOV):
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/pip install --quiet --disable-pip-version-check checkov==3.3.30

$(CARGO_DENY):
	cargo install --locked --root $(TOOLS)/cargo cargo-deny --version 0.20.2

$(BUILD_BIN)/cargo-lambda:
	$(PYTHON) -m venv $(TOOLS)/build
	$(TOOLS)/build/bin/pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2 ziglang==0.17.1

$(SAM):
	$(PYTHON) -m venv $(TOOLS)/sam
	$(TOOLS)/sam/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==1.170.0
