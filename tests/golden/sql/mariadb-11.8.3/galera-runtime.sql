SET GLOBAL wsrep_provider_options = 'pc.bootstrap=YES';
SET GLOBAL wsrep_sst_method = 'rsync';
