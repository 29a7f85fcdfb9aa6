-- Hand-backs no longer reuse an attempt number.
--
-- A worker draining on SIGTERM hands its jobs back to the queue. It used to
-- do that by decrementing attempts, so the next claim reused the number and
-- wrote under the same output prefix as the attempt it replaced: over the
-- preview learners might still be watching, or, after the preview was
-- deleted, with the asset pointing at nothing. attempts now counts every
-- claim (each claim names its own prefix, as the pipeline migration says)
-- and handbacks counts the claims that ended in a hand-back. A job gives up
-- once attempts - handbacks reaches max_attempts, whether its attempts
-- failed or their workers died: a source that kills every worker it meets
-- is failed with worker_crashed instead of being claimed for ever.
ALTER TABLE jobs
    ADD COLUMN handbacks integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT jobs_handbacks_within_attempts CHECK (handbacks BETWEEN 0 AND attempts);
