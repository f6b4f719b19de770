"""Lightning callbacks: throughput bookkeeping, task figures (maps, samples, captions) to every logger."""
