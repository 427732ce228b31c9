"""replay: rebuild what happened to jobs from the ledger, wherever it is kept.

sources/    one reader per kind of source: NDJSON folder, S3, Kafka, Redis streams
events      the compact event tuple replay works on
merge       read every source, drop duplicates by event id, order by queue and stream id
history     one job's timeline, attempts and derived facts; anomalies (see anomalies)
state       queues rebuilt from events; verify compares them with live Redis
incident    what happened in a time window; query filters events for auditors
report      tables and JSON for each command; render and html print them
cli         the `replay` command; bench measures how fast it reads
"""
