# One command sets up and starts the app; one sets up and runs every test.
# Both create .venv/ from requirements.txt when it is missing (or older than it).
PY := .venv/bin/python
export LOTTERY_DATA ?= $(CURDIR)/cache/data

.PHONY: run test lint venv clean-venv

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: .venv/.installed

run: venv
	$(PY) -m streamlit run app.py

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest -q

clean-venv:
	rm -rf .venv
