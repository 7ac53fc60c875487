"""Class vocabularies and fixed shapes of the benchmarks (docs/method.md §2)."""

# The 25 LLP classes in the index order every published number uses (docs/method.md §2).
LLP_CLASSES: tuple[str, ...] = (
    "Speech",
    "Car",
    "Cheering",
    "Dog",
    "Cat",
    "Frying_(food)",
    "Basketball_bounce",
    "Fire_alarm",
    "Chainsaw",
    "Cello",
    "Banjo",
    "Singing",
    "Chicken_rooster",
    "Violin_fiddle",
    "Vacuum_cleaner",
    "Baby_laughter",
    "Accordion",
    "Lawn_mower",
    "Motorcycle",
    "Helicopter",
    "Acoustic_guitar",
    "Telephone_bell_ringing",
    "Baby_cry_infant_cry",
    "Blender",
    "Clapping",
)
LLP_CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(LLP_CLASSES)}

LLP_NUM_SEGMENTS = 10  # T: one-second segments per LLP video
LLP_FRAMES_PER_SEGMENT = 8  # ResNet-152 frames per second

# Feature folder -> per-video array shape (docs/method.md §2).
LLP_FEATURES: dict[str, tuple[int, int]] = {
    "vggish": (10, 128),
    "res152": (80, 2048),
    "r2plus1d_18": (10, 512),
}

# Split name -> weak-label CSV (docs/method.md §2).
LLP_SPLIT_CSV: dict[str, str] = {
    "train": "AVVP_train.csv",
    "val": "AVVP_val_pd.csv",
    "test": "AVVP_test_pd.csv",
}
LLP_DENSE_CSV: dict[str, str] = {
    "audio": "AVVP_eval_audio.csv",
    "visual": "AVVP_eval_visual.csv",
}
VIDEO_ID_LENGTH = 11  # feature files are named by the first 11 characters

# Example key -> LLP feature folder (docs/method.md §2).
FEATURE_FOLDERS: dict[str, str] = {
    "audio": "vggish",
    "video_2d": "res152",
    "video_3d": "r2plus1d_18",
}
# Splits whose videos carry segment-level (dense) audio/visual labels.
DENSE_SPLITS: tuple[str, ...] = ("val", "test")
