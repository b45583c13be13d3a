"""Batch jobs larger than one instance: a planner splits the input into chunks that any number
of instances score in parallel, and exactly one delivery commits the output and sends the
result. In the order a fanned-out job goes through them:

- ``planner``: the job message's delivery pins the model and the input's version, cuts the
  input into line-aligned byte ranges, writes the ``plan`` once and sends the chunk messages;
- ``plan``: the plan record (``jobs/{id}/plan.json``), what every chunk reads;
- ``chunk_messages``: the chunk messages on ``CHUNK_QUEUE_NAME``;
- ``chunk_worker``: a chunk delivery scores its byte range with the pinned model
  (``pinned_models``) from the pinned input (``pinned_input``) and writes its marker;
- ``markers``: the chunk markers (``jobs/{id}/chunks/{index}``);
- ``completion``: the delivery that sees every marker commits the output and sends the one
  result (or a failed chunk fails the job);
- ``status``: a job's progress from its plan and markers (``scorefn jobs status``);
- ``job_blobs``: where all of it lives in the batch container.
"""
