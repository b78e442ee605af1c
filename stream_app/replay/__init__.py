"""``kpi replay``: send a JSONL event log or a mapped CSV export to the input topics.

Replay produces every record of a file to its input topic (`crm.signups`,
`crm.purchases`, ...), keyed by customer id, exactly as a live producer would. The
processor validates what arrives, dead-letters what breaks the contract and ignores
event ids it has already seen, so a replay is safe to run twice.

- **JSONL** is the event log of `kpi simulate --out`: one
  `{"event_type", "key", "value"}` object per line. Values are sent byte for byte.
- **CSV** needs a mapping: `--event-type TYPE` (every row one type) or
  `--type-column COL` with `--type-map VALUE=TYPE`; `--map FIELD=COLUMN` for columns
  not named like the field; `--set FIELD=VALUE` for constants (`--set currency=USD`).
  Without `--event-id-column`, each row's `event_id` is derived from the file name and
  the row number, so replaying the same file again is deduplicated (give each export its
  own file name). Amounts stay exact decimal strings, scores become integers.
- `--dry-run` parses every record as the processor would, sends nothing, and lists the
  rows it would reject with their line number, reason, field and message (exit 1 if any).
- `--rate N` caps the events per second; a progress bar shows on terminals.

**Bootstrapping the existing customer base.** The processor only knows the customers it
has seen sign up: retention, churn and CLV start from an empty base otherwise. Before
going live, export the current customers as signup events with their *original* signup
time as `occurred_at` (and their region and acquisition campaign), check the export with
`--dry-run`, replay it, and only then start the live producers. Customers who already
left can be exported as a signup followed by their cancellation. Events older than the
newest one seen minus `KPI_MAX_LATENESS` (31 days by default) are dead-lettered as
`too_late`, so replay history in time order and before live traffic moves the watermark.

```sh
kpi replay customers-2026-11-02.csv --event-type signup --dry-run \
    --map customer_id=cust_id --map occurred_at=signed_up_at --map region=country
kpi replay customers-2026-11-02.csv --event-type signup \
    --map customer_id=cust_id --map occurred_at=signed_up_at --map region=country
kpi replay orders.csv --event-type purchase --map customer_id=cust_id \
    --map occurred_at=created --map amount=total --map order_id=id --set currency=USD
```
"""

from stream_app.replay.cli import add_parser, run

__all__ = ["add_parser", "run"]
