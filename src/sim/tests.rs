use std::time::{Duration, Instant};

use super::*;

#[test]
#[ignore = "measures generation speed; run with --release -- --ignored --nocapture"]
fn speed() {
    let started = Instant::now();
    let mut spans = 0;
    let mut batches = 0;
    for batch in Simulator::new(Scenario::default()) {
        batches += 1;
        if let Some(traces) = &batch.traces {
            spans += traces
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum::<usize>();
        }
    }
    let generate = started.elapsed();
    let started = Instant::now();
    let mut sink = std::io::sink();
    let summary = write_json_lines(Simulator::new(Scenario::default()), &mut sink).unwrap();
    let json = started.elapsed();
    eprintln!(
        "one simulated hour: {batches} batches, {spans} spans, generated in {generate:?}; \
         as JSON lines in {json:?}: {summary}"
    );
    let _ = Duration::ZERO;
}
