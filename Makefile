# One command sets up and starts the app; one sets up and runs every test.
# Both create .venv/ from requirements.txt when it is missing (or older than it).
PY := .venv/bin/python
export LOTTERY_DATA ?= $(CURDIR)/cache/data

.PHONY: run test lint venv clean-venv bench class-server

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: .venv/.installed

run: venv
	$(PY) -m streamlit run app.py

# Several app processes on one store behind nginx, sticky per browser (docs/class-server.md,
# "More than one app process"), e.g. `make class-server PROCESSES=4 PORT=8080 AUTH=/etc/nginx/lottery.htpasswd`.
PROCESSES ?= 2
PORT ?= 8080
AUTH ?=
class-server: venv
	$(PY) -m ops.class_server --processes $(PROCESSES) --port $(PORT) $(if $(AUTH),--auth $(AUTH))

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# Benchmarks and the paper's experiments (not part of `make test`); each also runs alone,
# e.g. `.venv/bin/python bench/speed.py`. Results: bench/results/*.json, figures: docs/.
bench: venv
	$(PY) bench/engine_core.py
	$(PY) bench/speed.py
	$(PY) bench/peer_imp.py
	$(PY) bench/convex.py
	$(PY) bench/concavity.py
	$(PY) bench/tradeoff.py
	$(PY) bench/controller.py --mnist
	$(PY) bench/estimates.py
	$(PY) bench/burst.py
	$(PY) bench/app_responsiveness.py
	$(PY) bench/app_live.py
	$(PY) bench/plots.py

clean-venv:
	rm -rf .venv
