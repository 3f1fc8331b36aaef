RO
az2http-01%urn:ietf:params:acme:error:connection"connection refused(ä÷ÄÕ