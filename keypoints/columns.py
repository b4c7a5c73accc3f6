"""The Kaggle file format: the 30 keypoint columns of training.csv, in Kaggle's order.

"left" is the person's left, which sits on the image's right.
"""

KEYPOINTS = (
    "left_eye_center", "right_eye_center",
    "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner",
    "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner", "mouth_right_corner",
    "mouth_center_top_lip", "mouth_center_bottom_lip",
)
COLUMNS = tuple(f"{k}_{axis}" for k in KEYPOINTS for axis in "xy")
# The keypoints every Kaggle training row has; the other 11 are missing in ~70% of rows.
ALWAYS_LABELLED = ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")
IMAGE_SIZE = 96
