"""predictions: every verdict of the model tier, for live accuracy

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("photo_id", sa.String(length=36), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("probs", sa.Text(), nullable=True),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["photo_id"], ["photos.id"], name=op.f("fk_predictions_photo_id_photos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    op.create_index("ix_predictions_version_predicted", "predictions", ["model_version", "predicted_at"])
    op.create_index(op.f("ix_predictions_photo_id"), "predictions", ["photo_id"])
    # Verdicts given before this revision become predictions too, so that their scores are not lost.
    op.execute(
        "INSERT INTO predictions (photo_id, model_version, label, probs, predicted_at) "
        "SELECT id, model_version, verdict, verdict_probs, verdict_at FROM photos "
        "WHERE verdict <> 'pending' AND model_version IS NOT NULL AND verdict_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_predictions_photo_id"), table_name="predictions")
    op.drop_index("ix_predictions_version_predicted", table_name="predictions")
    op.drop_table("predictions")
