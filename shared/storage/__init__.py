"""Storage access both apps share: the account from app settings, queue clients, JSON
records written under ETags, and the job-state blobs one app writes and the other reads
(ledgers, failure records, parts). Their names and formats are the contract's."""
