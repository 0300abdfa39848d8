"""Migrations of every ``territory_<code>`` schema: module vNNN_name is version NNN. List each one
below."""

from __future__ import annotations

from . import (
    v001_foundation,
    v002_event_spine,
    v003_transaction_digest,
    v004_courses_and_badges,
    v005_gated_rooms,
    v006_forum,
    v007_media,
    v008_course_materials,
    v009_effects_and_retries,
    v010_credential_ids,
    v011_remote_gates,
    v012_refused_knocks,
    v013_erasure_requests,
    v014_events_waiting_for_keys,
    v015_trace_context,
)

MODULES = (
    v001_foundation,
    v002_event_spine,
    v003_transaction_digest,
    v004_courses_and_badges,
    v005_gated_rooms,
    v006_forum,
    v007_media,
    v008_course_materials,
    v009_effects_and_retries,
    v010_credential_ids,
    v011_remote_gates,
    v012_refused_knocks,
    v013_erasure_requests,
    v014_events_waiting_for_keys,
    v015_trace_context,
)
