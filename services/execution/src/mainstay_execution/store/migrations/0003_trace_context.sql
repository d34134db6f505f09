-- The W3C traceparent of the submission, so whichever instance runs the task (after a
-- takeover too) goes on in the submitter's trace.
ALTER TABLE tasks ADD COLUMN traceparent text NOT NULL DEFAULT '';
