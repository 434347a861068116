"""readings: the epoch of a device's sequence counter joins the unique key; one open alarm per device and kind

A reflashed or replaced board counts from 0 again under a new epoch: with (device_id, seq) unique its readings would
be dropped as replays. Readings stored so far are epoch 0, which is also what firmware without the field sends, so
deduplication of every existing stream stays exact. Alarms gain a second kind (seq_jump) that may be open beside a
fallen one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    with op.batch_alter_table("sensor_readings") as batch:
        batch.add_column(sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False))
        batch.drop_constraint("uq_sensor_readings_device_seq", type_="unique")
        batch.create_unique_constraint("uq_sensor_readings_device_epoch_seq", ["device_id", "epoch", "seq"])
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_epoch", sa.BigInteger(), nullable=True))
    op.execute("UPDATE devices SET last_epoch = 0 WHERE last_seq IS NOT NULL")
    with op.batch_alter_table("alarms") as batch:
        batch.drop_index("uq_alarms_one_open_per_device")
        batch.create_index(
            "uq_alarms_one_open_per_device_kind",
            ["device_id", "kind"],
            unique=True,
            postgresql_where=sa.text("closed_at IS NULL"),
            sqlite_where=sa.text("closed_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.drop_index("uq_alarms_one_open_per_device_kind")
    # Only the fallen alarms fit the older one-per-device index.
    op.execute("DELETE FROM alarms WHERE kind <> 'fallen'")
    with op.batch_alter_table("alarms") as batch:
        batch.create_index(
            "uq_alarms_one_open_per_device",
            ["device_id"],
            unique=True,
            postgresql_where=sa.text("closed_at IS NULL"),
            sqlite_where=sa.text("closed_at IS NULL"),
        )
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_epoch")
    # Readings of later epochs would break the older key: they cannot be kept.
    op.execute("DELETE FROM sensor_readings WHERE epoch <> 0")
    with op.batch_alter_table("sensor_readings") as batch:
        batch.drop_constraint("uq_sensor_readings_device_epoch_seq", type_="unique")
        batch.create_unique_constraint("uq_sensor_readings_device_seq", ["device_id", "seq"])
        batch.drop_column("epoch")
