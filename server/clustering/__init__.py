"""Clustering of the fleet's animal crops: crops, features, clusters, the report a biologist reads.

`items` says which crops exist, `crops` cuts them, `extractors/` turns them into features (ResNet-152
on PyTorch or ONNX Runtime, or the deployed detector's own backbone), `store` keeps the features in
Parquet, `extract` runs it as resumable chunks on the job queue, `cluster` groups them and `report`
writes what a reviewer sees.
"""
