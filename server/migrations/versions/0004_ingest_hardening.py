"""ingest hardening: state ordered by receive time, clock flags, idempotent OTA progress and dead
letters, dashboard sessions

Revision ID: 0004_ingest_hardening
Revises: 0003_fleetops
Create Date: 2026-11-23 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_ingest_hardening"
down_revision = "0003_fleetops"  # re-chained after merging main
branch_labels = None
depends_on = None


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch_op:
        batch_op.add_column(sa.Column("state_received_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(_flag("clock_suspect"))
    with op.batch_alter_table("detection_frames") as batch_op:
        batch_op.add_column(_flag("clock_suspect"))
    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_dead_letters_digest", ["digest"])
    # copies stored before progress was idempotent: keep the first of each
    op.execute(
        "DELETE FROM device_model_status WHERE id NOT IN "
        "(SELECT MIN(id) FROM device_model_status GROUP BY device_id, version, stage, at)"
    )
    with op.batch_alter_table("device_model_status") as batch_op:
        batch_op.create_unique_constraint("uq_ota_progress", ["device_id", "version", "stage", "at"])
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("web_sessions") as batch_op:
        batch_op.create_index("ix_web_sessions_token_id", ["token_id"], unique=False)
        batch_op.create_index("ix_web_sessions_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("web_sessions")
    with op.batch_alter_table("device_model_status") as batch_op:
        batch_op.drop_constraint("uq_ota_progress", type_="unique")
    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.drop_constraint("uq_dead_letters_digest", type_="unique")
        batch_op.drop_column("digest")
    with op.batch_alter_table("detection_frames") as batch_op:
        batch_op.drop_column("clock_suspect")
    with op.batch_alter_table("devices") as batch_op:
        batch_op.drop_column("clock_suspect")
        batch_op.drop_column("state_received_at")
