"""fleet operations: sites, device enrolments, deployment details

Revision ID: 0003_fleetops
Revises: 0002_ota
Create Date: 2026-11-30 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_fleetops"
down_revision = "0002_ota"  # re-chained after merging main
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("blur_people", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "device_enrolments",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("token_hash", sa.String(length=128), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("device_id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("camera_height_m", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("camera_heading_deg", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("camera_tilt_deg", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("reference_photo_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("setup_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("comments", sa.String(length=500), nullable=True))
        batch_op.create_index(batch_op.f("ix_deployments_site_id"), ["site_id"], unique=False)
        batch_op.create_foreign_key("fk_deployments_site_id", "sites", ["site_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_constraint("fk_deployments_site_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_deployments_site_id"))
        for column in (
            "comments",
            "setup_by",
            "reference_photo_sha256",
            "camera_tilt_deg",
            "camera_heading_deg",
            "camera_height_m",
            "site_id",
        ):
            batch_op.drop_column(column)
    op.drop_table("device_enrolments")
    op.drop_table("sites")
