"""OTA: releases with their archives and rollback grants, device groups, staged rollouts, the
release each device should run, and the model file each device runs

Revision ID: 0002_ota
Revises: 0002_learning_loop
Create Date: 2026-11-30 07:04:32.849886
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ota"
down_revision = "0002_learning_loop"  # re-chained after merging main
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("name", "device_id"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("canary_group", sa.String(length=64), nullable=True),
        sa.Column("percentages", sa.JSON(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("max_failure_percent", sa.Float(), nullable=False),
        sa.Column("success_percent", sa.Float(), nullable=False),
        sa.Column("spread_s", sa.Integer(), nullable=False),
        sa.Column("tolerated_failures", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "device_releases",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("desired_release_id", sa.Integer(), nullable=True),
        sa.Column("previous_release_id", sa.Integer(), nullable=True),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("stage_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_model_name", sa.String(length=100), nullable=True),
        sa.Column("previous_model_version", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["desired_release_id"],
            ["releases.id"],
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["previous_release_id"],
            ["releases.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
        ),
        sa.PrimaryKeyConstraint("device_id"),
    )
    with op.batch_alter_table("device_releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_releases_rollout_id"), ["rollout_id"], unique=False)

    with op.batch_alter_table("device_model_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))

    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("size_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("archive_file", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("runtime", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("min_agent_version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("rollback_grant", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_releases_model_sha256"), ["model_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_releases_model_sha256"))
        batch_op.drop_column("rollback_grant")
        batch_op.drop_column("min_agent_version")
        batch_op.drop_column("runtime")
        batch_op.drop_column("key_id")
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("archive_file")
        batch_op.drop_column("size_bytes")
        batch_op.drop_column("version")
        batch_op.drop_column("name")

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("model_sha256")

    with op.batch_alter_table("device_model_status", schema=None) as batch_op:
        batch_op.drop_column("received_at")
        batch_op.drop_column("release_id")

    with op.batch_alter_table("device_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_releases_rollout_id"))

    op.drop_table("device_releases")
    op.drop_table("rollouts")
    op.drop_table("device_groups")
