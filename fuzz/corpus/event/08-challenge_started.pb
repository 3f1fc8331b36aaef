j
az1dns-01