"""photo labels from telemetry; readings indexed by device and server time

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "photo_labels",
        sa.Column("photo_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reading_id", sa.BigInteger(), nullable=True),
        sa.Column("gap_s", sa.Float(), nullable=True),
        sa.Column("readings_in_window", sa.Integer(), nullable=False),
        sa.Column("angle_deg", sa.Float(), nullable=True),
        sa.Column("quality", sa.Float(), nullable=True),
        sa.Column("manual_label", sa.String(length=16), nullable=True),
        sa.Column("manual_by", sa.String(length=36), nullable=True),
        sa.Column("manual_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("params_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["manual_by"], ["users.id"], name=op.f("fk_photo_labels_manual_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["photo_id"], ["photos.id"], name=op.f("fk_photo_labels_photo_id_photos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("photo_id", name=op.f("pk_photo_labels")),
    )
    # A plain CREATE INDEX (no batch: SQLite needs no table copy for it). It blocks ingest writes while it builds.
    op.create_index("ix_sensor_readings_device_received", "sensor_readings", ["device_id", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_sensor_readings_device_received", table_name="sensor_readings")
    op.drop_table("photo_labels")
