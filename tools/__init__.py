"""Developer tools: the parity harness against the authors' code, benchmarks, fixtures
(run from the repository root; tests import them as ``tools.<module>``)."""
