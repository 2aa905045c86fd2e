"""Everything about throttling: which throughput tests a target gets (plan), interleaved A/B
flows within one budget (abtest), the statistics that decide (decide, rates) and the rate a
target usually sees here (baseline). `decide`, `rates` and `baseline` are pure; `plan` and
`abtest` run flows through probe.measure.throughput."""
