"""photos: processing time and worker lease, so that a job lost with a crashed photo worker is re-enqueued

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("processing_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker_lease_until", sa.DateTime(timezone=True), nullable=True))
    # Photos already processing: as if claimed when created (the oldest they can be).
    op.execute("UPDATE photos SET processing_at = created_at WHERE status = 'processing'")
    op.create_index("ix_photos_status_processing", "photos", ["status", "processing_at"])


def downgrade() -> None:
    op.drop_index("ix_photos_status_processing", table_name="photos")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("worker_lease_until")
        batch.drop_column("processing_at")
