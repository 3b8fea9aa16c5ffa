-- Backend DB: escrow for rotated MercadoPago token pairs (docs/invariants.md, invariant 3).
-- When MercadoPago answered a refresh but the Admin DB would not take the new pair, the
-- refresher parks the pair here, still ENCRYPTED exactly as the Admin master columns hold
-- it (AAD mp:<account_id>:<field>), with the Admin version it was refreshed from. The next
-- run applies it (compare-and-swap on that version) before it would call MercadoPago.
-- Idempotent and non-destructive.

create table if not exists public.mp_refresh_escrow (
  account_id uuid primary key, -- nv_accounts.id in the Admin DB
  base_version bigint not null, -- nv_accounts.mp_token_version the pair was refreshed from
  access_token_encrypted text not null, -- ciphertext, AAD mp:<account_id>:access_token
  refresh_token_encrypted text not null, -- ciphertext, AAD mp:<account_id>:refresh_token
  expires_in integer not null,
  token_expires_at timestamptz not null,
  user_id bigint,
  public_key text,
  live_mode boolean,
  scope text,
  created_at timestamptz not null default now()
);

comment on table public.mp_refresh_escrow is
  'Rotated MercadoPago token pairs (ciphertexts) the Admin DB could not take yet; applied by mp-refresh.';

alter table public.mp_refresh_escrow enable row level security;

revoke all on table public.mp_refresh_escrow from public;

do $$
declare
  grantee_role text;
begin
  foreach grantee_role in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = grantee_role) then
      execute format('revoke all on table public.mp_refresh_escrow from %I', grantee_role);
    end if;
  end loop;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on table public.mp_refresh_escrow to service_role;
  end if;
end
$$;
