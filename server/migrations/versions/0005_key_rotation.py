"""key rotation: signed statements and each trap's keyring state

Revision ID: 0005_key_rotation
Revises: 0004_ingest_hardening
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_key_rotation"
down_revision = "0004_ingest_hardening"  # re-chained after merging ingest
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_rotations",
        sa.Column("sequence", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("statement", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("signer_key_id", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )
    op.create_table(
        "device_keyrings",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("desired_sequence", sa.Integer(), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_sequence", sa.Integer(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trusted_keys", sa.JSON(), nullable=True),
        sa.Column("refused_sequence", sa.Integer(), nullable=True),
        sa.Column("refused_reason", sa.String(length=500), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.PrimaryKeyConstraint("device_id"),
    )


def downgrade() -> None:
    op.drop_table("device_keyrings")
    op.drop_table("key_rotations")
