# Thin wrappers: ./dev does the work (it also runs where make is not installed).
.PHONY: demo test bench
demo:
	./dev demo
test:
	./dev test
bench:
	./dev bench
