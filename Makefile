# Each routine job is one target; they all go through scripts/dev.py (which needs only python3).
.PHONY: setup demo test bench schemas
setup:   ; python3 scripts/dev.py setup
demo:    ; python3 scripts/dev.py demo
test:    ; python3 scripts/dev.py test
bench:   ; python3 scripts/dev.py bench
schemas: ; python3 scripts/dev.py schemas
