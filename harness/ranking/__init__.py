"""From runs to Kaggle: the leaderboard, validated submissions and ensembles."""
