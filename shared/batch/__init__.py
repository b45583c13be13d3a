"""Batch jobs: one queue message per job, its input a blob (CSV or JSON Lines) of any size or
rows in the message, its output a blob, its result one message, exactly once.

The modules, in the order a job goes through them:

- ``runner``: a delivery of a job message, from claim to result (``BatchJobs``);
- ``messages``: the job message, validated into a typed job;
- ``records``: the job's record and this delivery's claim on it (exactly once);
- ``inline_jobs``: a job whose rows are in the message;
- ``blob_jobs``: a blob job in one invocation (or handed to ``fanout`` when large);
- ``ranges``: the input blob read by byte ranges;
- ``lines``: the stream cut into chunks, units and pieces of whole lines;
- ``units``: each unit parsed (``prefetch``: ahead, in a thread), predicted, written;
- ``csv_layout``, ``csv_input`` (``csv_fast``, the vectorised path), ``cells`` (pandas'
  value rules), ``jsonl_input``, ``features``: parsing into ``parsed_rows``;
- ``output``: the output rows, exact floats; ``output_blob``: the committed output's metadata;
- ``unseen``: category values the model was not trained on, counted;
- ``results``: the job's result message and the results queue; ``job_metrics``: its metrics;
- ``fanout/``: a job larger than one instance, planned into chunks (see its package).
"""
