-- Admin DB: the outbox's table comment cites the repository's own contract (docs/contract.md,
-- "Events to the platform") instead of a document outside it, for databases that applied
-- 20261206000200_mp_event_outbox.sql before its comment changed (that file now says the same).
comment on table public.mp_event_outbox is
  'Connection events for the platform (docs/contract.md, "Events to the platform"). Never store secrets (tokens, codes, keys) here.';
