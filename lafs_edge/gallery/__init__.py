"""The on-device gallery: enrolled people and their embeddings (SQLite), the enrollment quality
gate, and the recognition pipeline (detect, mesh, align, embed, match)."""
from lafs_edge.gallery.files import GalleryBusy
from lafs_edge.gallery.pipeline import STAGES, Recognized, Recognizer
from lafs_edge.gallery.quality import QualityGate, assess
from lafs_edge.gallery.matching import Match, person_match
from lafs_edge.gallery.rules import FingerprintMismatch
from lafs_edge.gallery.store import EnrollResult, ErasureIncomplete, Gallery, Person, Shot

__all__ = ["EnrollResult", "ErasureIncomplete", "FingerprintMismatch", "Gallery", "GalleryBusy",
           "Match", "Person", "QualityGate", "Recognized", "Recognizer", "STAGES", "Shot", "assess",
           "person_match"]
